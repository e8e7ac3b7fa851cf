"""Shards of an evaluation as data files (Parquet tables + one JSON), and their checked merge.

``evaluate --shard K/N`` writes into its folder ``results.parquet``, ``timings.parquet`` and
``curves.parquet`` (one row per method x mode x image, the curve as a list column) and
``shard.json``: the format's name and version, the shard's K and N, alpha, the report's facts,
the methods, the protocol (:class:`~helpers.evaluation.runner.EvalConfig`), the failures, the
exact image list it was cut from (every image's file, sha256 and label, and their hash) and the
sha256 of each table file. Nothing is ever executed from these files (no pickle).

:func:`read_shard` refuses, in one line naming the folder, a missing, broken, truncated, altered
or foreign file; :func:`check_shards` refuses shards cut from different image lists (saying what
differs), with different settings, missing or repeated parts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import write_atomic
from .runner import EvalConfig, Evaluation, MethodSpec, join_images

FORMAT = "xai-cam evaluation shard"
VERSION = 1
INFO = "shard.json"
TABLES: tuple[str, ...] = ("results", "timings", "curves")


class ShardError(ValueError):
    """A shard that cannot be used or merged; the message names the folder and the reason."""


@dataclass
class Shard:
    """One shard as read back: where, which part, the settings and its evaluation."""

    folder: Path
    k: int
    n: int
    alpha: float
    facts: dict[str, str]
    images: list[list]
    evaluation: Evaluation

    @property
    def images_sha256(self) -> str:
        return image_list_hash(self.images)


def image_list(manifest: pd.DataFrame) -> list[list]:
    """The identity of an image list: ``[file, sha256, label_idx]`` per image, sorted by file."""
    return sorted([str(r.file), str(r.sha256), int(r.label_idx)] for r in manifest.itertuples())


def image_list_hash(images: Sequence[Sequence]) -> str:
    """sha256 of :func:`image_list`'s output."""
    return hashlib.sha256(json.dumps([list(i) for i in images]).encode()).hexdigest()


def _parquet(table: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), sink)
    return sink.getvalue()


def _curves_table(ev: Evaluation) -> pd.DataFrame:
    rows = [{"method": label, "mode": mode, "image": i, "values": [float(v) for v in curve]}
            for label, modes in ev.curves.items() for mode, curves in modes.items()
            for i, curve in enumerate(curves)]
    return pd.DataFrame(rows, columns=["method", "mode", "image", "values"])


def write_shard(folder: str | Path, ev: Evaluation, k: int, n: int, alpha: float, facts: dict[str, str],
                images: list[list]) -> Path:
    """Write shard ``k`` of ``n`` (its evaluation, settings and the full ``images`` list it was cut
    from, :func:`image_list`) into ``folder``; every file atomically, ``shard.json`` last."""
    folder = Path(folder)
    blobs = {name: _parquet(table) for name, table in
             (("results", ev.results), ("timings", ev.timings), ("curves", _curves_table(ev)))}
    for name, blob in blobs.items():
        write_atomic(folder / f"{name}.parquet", blob)
    info = {"format": FORMAT, "version": VERSION, "shard": [k, n], "alpha": alpha, "facts": facts,
            "methods": [[s.label, s.method, [list(o) for o in s.options]] for s in ev.methods],
            "config": dataclasses.asdict(ev.config) if ev.config is not None else None,
            "failures": [list(f) for f in ev.failures], "images": images,
            "images_sha256": image_list_hash(images),
            "files": {f"{name}.parquet": hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}}
    write_atomic(folder / INFO, json.dumps(info, indent=1) + "\n")
    return folder / INFO


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _read_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO
    if not path.is_file():
        raise ShardError(f"shard {folder}: no {INFO} (run `evaluate --shard K/N --out {folder}` first)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardError(f"shard {folder}: {INFO} is broken or truncated ({type(err).__name__})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ShardError(f"shard {folder}: {INFO} is not a shard of `python -m helpers evaluate --shard`")
    if info.get("version") != VERSION:
        raise ShardError(f"shard {folder}: shard format version {info.get('version')!r}, this code reads {VERSION}")
    expected = {"shard": list, "alpha": (int, float), "facts": dict, "methods": list, "config": dict,
                "failures": list, "images": list, "images_sha256": str, "files": dict}
    bad = [key for key, kind in expected.items() if not isinstance(info.get(key), kind)]
    if bad:
        raise ShardError(f"shard {folder}: {INFO} lacks or mistypes {', '.join(bad)}")
    return info


def _read_table(folder: Path, name: str, digest: Any) -> pd.DataFrame:
    path = folder / name
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise ShardError(f"shard {folder}: cannot read {name} ({err.strerror})") from None
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ShardError(f"shard {folder}: {name} is truncated or altered (its sha256 differs from {INFO}'s)")
    try:
        return pq.read_table(pa.BufferReader(blob)).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise ShardError(f"shard {folder}: {name} is not a readable Parquet table ({err})") from None


def read_shard(folder: str | Path) -> Shard:
    """The shard in ``folder``, checked; :class:`ShardError` naming the folder and the problem."""
    folder = Path(folder)
    info = _read_info(folder)
    tables = {name: _read_table(folder, f"{name}.parquet", info["files"].get(f"{name}.parquet")) for name in TABLES}
    try:
        k, n = (int(v) for v in info["shard"])
        methods = [MethodSpec(label, method, _as_tuple(options)) for label, method, options in info["methods"]]
        config = EvalConfig(**{key: _as_tuple(v) for key, v in info["config"].items()})
        curves_table = tables["curves"]
        curves = {s.label: {mode: np.array([list(v) for v in curves_table.loc[
            (curves_table.method == s.label) & (curves_table["mode"] == mode)].sort_values("image")["values"]])
            for mode in ("insertion", "deletion")} for s in methods}
        failures = [(str(f), str(m)) for f, m in info["failures"]]
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ShardError(f"shard {folder}: {INFO} or curves.parquet is malformed ({err})") from None
    if info["images_sha256"] != image_list_hash(info["images"]):
        raise ShardError(f"shard {folder}: {INFO}'s image list does not match its hash (altered)")
    ev = Evaluation(tables["results"], tables["timings"], curves, failures, methods, config)
    return Shard(folder, k, n, float(info["alpha"]), info["facts"], info["images"], ev)


def _image_difference(a: Shard, b: Shard) -> str:
    """What differs between two shards' image lists, in words."""
    files_a, files_b = {i[0]: i for i in a.images}, {i[0]: i for i in b.images}
    only_a, only_b = sorted(set(files_a) - set(files_b)), sorted(set(files_b) - set(files_a))
    changed = sorted(f for f in set(files_a) & set(files_b) if files_a[f] != files_b[f])
    parts = [f"{len(a.images)} vs {len(b.images)} images"]
    parts += [f"only in {s.folder}: {', '.join(only[:3])}{' ...' if len(only) > 3 else ''}"
              for s, only in ((a, only_a), (b, only_b)) if only]
    if changed:
        parts.append(f"different content or label: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}")
    return "; ".join(parts)


def check_shards(shards: Sequence[Shard]) -> list[Shard]:
    """The shards sorted by K once they form one run: parts 1..N of one N, each once, cut from the
    same image list, with the same model, methods, protocol and alpha; ShardError otherwise."""
    first = shards[0]
    for s in shards[1:]:
        if s.images_sha256 != first.images_sha256:
            raise ShardError(f"shards {first.folder} and {s.folder} were cut from different image lists: "
                             f"{_image_difference(first, s)}")
        facts_a, facts_b = ({k: v for k, v in x.facts.items() if k != "images"} for x in (first, s))
        cfg_a, cfg_b = (dataclasses.asdict(x.evaluation.config) for x in (first, s))
        pairs = {**{k: (facts_a.get(k), facts_b.get(k)) for k in sorted(set(facts_a) | set(facts_b))},
                 "alpha": (first.alpha, s.alpha), "N": (first.n, s.n),
                 "methods": tuple([m.label for m in x.evaluation.methods] for x in (first, s)),
                 "protocol": tuple({k: c[k] for k in cfg_a if cfg_a[k] != cfg_b[k]} for c in (cfg_a, cfg_b))}
        differ = [k for k, (x, y) in pairs.items() if x != y]
        if differ:
            x, y = pairs[differ[0]]
            raise ShardError(f"shards {first.folder} and {s.folder} differ in {', '.join(differ)} "
                             f"({differ[0]}: {x!r} vs {y!r})")
    seen: dict[int, Shard] = {}
    for s in shards:
        if s.k in seen:
            raise ShardError(f"shard {s.k}/{s.n} given twice: {seen[s.k].folder} and {s.folder}")
        seen[s.k] = s
    missing = [k for k in range(1, first.n + 1) if k not in seen]
    if missing:
        raise ShardError(f"need shards 1..{first.n} of {first.n} exactly once, missing "
                         f"{', '.join(f'{k}/{first.n}' for k in missing)}")
    return [seen[k] for k in range(1, first.n + 1)]


def merge_shards(folders: Sequence[str | Path]) -> tuple[Evaluation, float, dict[str, str]]:
    """The evaluation, alpha and facts of a single run, from the shard folders (any order)."""
    shards = check_shards([read_shard(f) for f in folders])
    return join_images(*[s.evaluation for s in shards]), shards[0].alpha, shards[0].facts
