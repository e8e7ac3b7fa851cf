"""Join study shards: one complete file per part, or a refusal that names the shard and the photos.

``python -m helpers study merge DIR... --out DIR``: the folders hold shard outputs of
:func:`helpers.study.run.run_stage` (and may hold complete parts, e.g. a merged val beside test
shards). Per part, every file must carry the same hash, no photo may be covered twice, and
together they must cover the part's whole photo list; otherwise nothing is written and the error
names the offending folder and photos. Shards are contiguous slices, so joined in photo order
they give exactly the rows of a single run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .store import PartFile, StudyFileError, read_folder, read_provenance, write_part, write_provenance


def _names(photos: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(photos[:limit])
    return shown + (f" and {len(photos) - limit} more" if len(photos) > limit else "")


def merge_part(name: str, pieces: Sequence[tuple[Path, PartFile]]) -> PartFile:
    """One complete part from its pieces (folder, file), checked; :class:`StudyFileError` says what is wrong."""
    first_dir, first = pieces[0]
    for folder, piece in pieces[1:]:
        if piece.facts["hash"] != first.facts["hash"]:
            raise StudyFileError(f"part {name!r}: {folder} has hash {piece.facts['hash']} but {first_dir} has "
                                 f"{first.facts['hash']} (different definition, protocol, model, photos or alpha); "
                                 "re-run the stale shard")
        if piece.facts["part_photos"] != first.facts["part_photos"]:
            raise StudyFileError(f"part {name!r}: {folder} was cut from another photo list than {first_dir}")
    owner: dict[str, Path] = {}
    for folder, piece in pieces:
        twice = [p for p in piece.facts["photos"] if p in owner]
        if twice:
            raise StudyFileError(f"part {name!r}: {folder} and {owner[twice[0]]} both cover {len(twice)} photo(s): "
                                 f"{_names(twice)}")
        owner.update(dict.fromkeys(piece.facts["photos"], folder))
    expected = first.facts["part_photos"]
    missing = [p for p in expected if p not in owner]
    if missing:
        raise StudyFileError(f"part {name!r}: {len(missing)} photo(s) covered by no shard: {_names(missing)}")
    order = {p: i for i, p in enumerate(expected)}
    pieces = sorted(pieces, key=lambda fp: order[fp[1].facts["photos"][0]] if fp[1].facts["photos"] else -1)
    # shards are contiguous, so their rows joined in photo order are a single run's; empty shards add nothing
    rows = pd.concat([p.rows for _, p in pieces if p.facts["photos"]], ignore_index=True)
    failed = [f for _, p in pieces for f in p.facts.get("failures", [])]
    facts = {**{k: v for k, v in first.facts.items() if k != "failures"}, "shard": [1, 1], "photos": list(expected),
             **({"failures": failed} if failed else {})}
    return PartFile(rows, facts)


def merge(folders: Sequence[str | Path], out: str | Path) -> list[str]:
    """Merge the parts found in ``folders`` into ``out`` (checked first, written only if all parts pass)."""
    found: dict[str, list[tuple[Path, PartFile]]] = {}
    provenance: dict[str, list[dict]] = {}
    for folder in map(Path, folders):
        parts = read_folder(folder)
        if not parts:
            raise StudyFileError(f"{folder}: no study part files (*.parquet)")
        prov = read_provenance(folder)
        for name, part in parts.items():
            found.setdefault(name, []).append((folder, part))
            entry = prov["parts"].get(name)
            if entry:
                provenance.setdefault(name, []).append(entry)
    merged = {name: merge_part(name, pieces) for name, pieces in found.items()}
    out = Path(out)
    for part in merged.values():
        write_part(out, part)
    prov = read_provenance(out)
    for name, entries in provenance.items():
        head = {k: v for k, v in entries[0].items() if k != "shards"}
        shards = {s["shard"] + s["start"]: s for e in entries for s in e.get("shards", [])}
        prov["parts"][name] = {**head, "shards": sorted(shards.values(), key=lambda s: s["start"])}
    write_provenance(out, prov)
    return sorted(merged)
