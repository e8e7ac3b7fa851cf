"""The study's files: one Parquet file per part (and shard) with its facts, and PROVENANCE.json.

A part's file ``<part>.parquet`` holds its rows plus, in the Parquet schema's metadata under
``study``, the facts that make the file checkable on its own: part name, stage, hash, shard
``[k, n]``, the part's whole photo list and the photos this shard covers. Files are data only
(Parquet, JSON): nothing is ever executed or unpickled from them. Writes are atomic (a temporary
file in the same folder, then a rename), so a killed run never leaves a half-written part.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import write_atomic

PROVENANCE = "PROVENANCE.json"
META_KEY = b"study"


class StudyFileError(ValueError):
    """A study file that cannot be used: broken, foreign, stale, or inconsistent with others."""


@dataclass
class PartFile:
    """One part's rows and facts as read from (or to be written to) ``<part>.parquet``."""

    rows: pd.DataFrame
    facts: dict[str, Any]

    @property
    def complete(self) -> bool:
        """Whether the file covers the part's whole photo list (a single run or a merge)."""
        return list(self.facts["shard"]) == [1, 1] and self.facts["photos"] == self.facts["part_photos"]


def part_path(folder: str | Path, part: str) -> Path:
    """Where part ``part`` lives in ``folder``."""
    return Path(folder) / f"{part}.parquet"


def write_part(folder: str | Path, part: PartFile) -> Path:
    """Write a part's rows and facts atomically as ``<folder>/<part>.parquet`` (zstd-compressed)."""
    path = part_path(folder, part.facts["part"])
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(part.rows, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(part.facts, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_part(path: str | Path) -> PartFile:
    """Read ``<part>.parquet``; a broken or foreign file is a :class:`StudyFileError` naming it."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise StudyFileError(f"{path}: not a readable study part ({type(err).__name__}: {err})") from None
    meta = (table.schema.metadata or {}).get(META_KEY)
    try:
        facts = json.loads(meta) if meta is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        facts = None
    needed = ("part", "stage", "hash", "shard", "photos", "part_photos")
    if not isinstance(facts, dict) or any(k not in facts for k in needed):
        raise StudyFileError(f"{path}: a Parquet file without the study's facts (not written by the study)")
    if facts["part"] != path.stem:
        raise StudyFileError(f"{path}: holds part {facts['part']!r}, not {path.stem!r}")
    return PartFile(table.to_pandas(), facts)


def read_folder(folder: str | Path) -> dict[str, PartFile]:
    """Every part file of a study folder, by part name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyFileError(f"{folder}: no such study folder")
    return {p.stem: read_part(p) for p in sorted(folder.glob("*.parquet"))}


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """``PROVENANCE.json`` of a folder (empty when absent); a broken file is a :class:`StudyFileError`."""
    path = Path(folder) / PROVENANCE
    if not path.is_file():
        return {"parts": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyFileError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("parts"), dict):
        raise StudyFileError(f"{path}: not a study provenance file (no 'parts')")
    return data


def write_provenance(folder: str | Path, data: dict[str, Any]) -> Path:
    """Write ``PROVENANCE.json`` atomically (sorted keys, so reruns give the same bytes for the same facts)."""
    path = Path(folder) / PROVENANCE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path
