"""A folder of the user's photos as a study (``python -m helpers evaluate``): one ``main`` part, its rows and report.

:func:`folder_spec` defines the study (an ``evaluate`` part named ``main`` over the imported photos, and a
``road`` part with ``--metrics road``); :func:`folder_photos` reads its photos from the imported
manifest (sorted by file; labels and boxes join the hash). Running, sharding, provenance and merging
are the study's own (:func:`helpers.study.run.run_part`, :mod:`helpers.study.merge`), so a shard is a
study shard. :func:`write_tables` writes the rows as CSVs; the study's report is then written over the
parts as over any study's (:func:`study_of`).

Maps computed elsewhere (:mod:`helpers.data.map_sources`, ``--maps NAME=PATH``) are methods of the ``main``
part like the package's own (:class:`FolderPart`): the same rows, statistics and report. Their identity (the
maps' sha256) joins the part's hash, so changed maps make the part stale; :func:`run_folder` checks every
map against the photos before any forward.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..config import write_atomic
from ..data import map_sources as sources
from ..data.images import read_manifest
from ..evaluation.runner import LOCALISATION, METRICS, MethodSpec, as_spec
from ..evaluation.stats import summary_table
from .parts import TIME_COLUMN, main_specs
from .results import Study
from .run import PartPhotos, PartRun, record, run_part
from .spec import Part, StudySpec, _tuples
from .store import PartFile, StudyFileError, read_folder

#: The dataset name of a folder's photos (their files and sha256, labels and boxes are hashed with it).
FOLDER_DATASET = "folder"
FLOAT_FORMAT = "%.8g"
#: Columns of a part's rows that are not results (the part, its hash, the curves, the timings).
NOT_RESULTS: tuple[str, ...] = ("part", "hash", "insertion_curve", "deletion_curve", TIME_COLUMN)


def folder_photos(manifest: str | Path, root: str | Path) -> PartPhotos:
    """The imported manifest's photos, sorted by file, read from ``root``; each file's label and boxes are
    part of the photos' identity (:attr:`PartPhotos.annotations`)."""
    rows = read_manifest(manifest).sort_values("file", kind="stable")
    files = [str(f) for f in rows["file"]]
    return PartPhotos(FOLDER_DATASET, files, dict(zip(files, rows["sha256"], strict=True)), Path(manifest),
                      Path(root), "test", {str(r.file): [int(r.label_idx), str(r.boxes)] for r in rows.itertuples()})


def _stand_in(method: Any) -> Any:
    """A method item with maps from outside as a floor (what the study's definition checks), others unchanged."""
    is_source = isinstance(method, (tuple, list)) and len(method) == 3 and method[1] == sources.SOURCE
    return (method[0], "random", method[2]) if is_source else method


@dataclasses.dataclass(frozen=True)
class FolderPart(Part):
    """A part of a folder's study: a :class:`~helpers.study.spec.Part` whose methods may include maps from
    outside (method :data:`helpers.data.map_sources.SOURCE`), checked as the part with floors in their place.
    Its fields are a Part's, so its hash is the same part's hash."""

    def __post_init__(self) -> None:
        def checked(key: str, value: Any) -> Any:
            return tuple(map(_stand_in, value)) if key == "methods" and isinstance(value, (tuple, list)) else value
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(Part)}
        Part(**{**fields, "options": tuple((k, checked(k, v)) for k, v in self.options)})


def method_specs(specs: Sequence[MethodSpec | sources.MapSource], road: bool = False) -> list[MethodSpec]:
    """The methods of a folder's study, map sources among them (:func:`helpers.evaluation.runner.as_spec`); a
    ValueError when the maps' name is another method's, or with ``road`` (ROAD does not take them yet)."""
    specs = [as_spec(s) for s in specs]
    labels = [s.label for s in specs]
    clash = next((s.label for s in specs if sources.is_source(s) and labels.count(s.label) > 1), None)
    if clash is not None:
        raise ValueError(f"maps {clash!r}: the name of a method already evaluated ({', '.join(labels)}); "
                         "give the maps another name")
    if road and any(map(sources.is_source, specs)):
        raise ValueError("ROAD (--metrics road) does not take maps from outside yet; evaluate them without it")
    return specs


def folder_spec(specs: Sequence[MethodSpec | sources.MapSource], model: str, steps: int | None = None,
                road: bool = False, timed: bool = True) -> StudySpec:
    """The study of a folder: ``main`` (every metric of ``specs``, timed unless ``timed`` is False, one photo per
    batch) and, with ``road``, ROAD of the same methods; ``steps`` for both presets' curves (None: the presets').
    ``specs`` may hold map sources (:func:`method_specs`)."""
    methods = tuple((s.label, s.method, tuple(s.options)) for s in method_specs(specs, road))
    parts = [FolderPart("main", "evaluate", "test", model, None, 1, options=(("methods", methods), ("timed", timed)))]
    if road:
        parts.append(FolderPart("road", "road", "test", model, None, 1, options=(("methods", methods),)))
    protocol = {} if steps is None else {"rise_steps": steps, "thesis_steps": steps}
    return StudySpec("evaluate", tuple(parts), description="a folder of photos", **protocol)


def spec_of(parts: dict[str, PartFile]) -> StudySpec:
    """The study definition a folder's part files were computed under (each file records its part and protocol)."""
    try:
        first = next(iter(parts.values())).facts
        defined = tuple(FolderPart(**{**p.facts["definition"], "options": _tuples(p.facts["definition"]["options"])})
                        for p in parts.values())
        return StudySpec(first["study"], defined, **first["protocol"])
    except (KeyError, TypeError, ValueError, StopIteration) as err:
        raise StudyFileError(f"these part files do not record their definition ({type(err).__name__}: {err})") \
            from None


def run_folder(spec: StudySpec, bundle: Any, out: Path, run: PartRun) -> dict[str, PartFile]:
    """Every part of a folder's study into ``out`` (``run``: the shard, the photos, the alpha, the cache);
    returns their files. Maps from outside are checked against all the photos first (a ValueError naming the
    file and key, before any forward and before any file is written)."""
    for part in spec.parts:
        sources.check_specs(main_specs(part, run.alpha), run.photos.files)
    for part in spec.parts:
        record(out, spec, part.name, run_part(spec, part, bundle, out, run))
    return {name: part for name, part in read_folder(out).items() if name in {p.name for p in spec.parts}}


def results_table(parts: dict[str, PartFile]) -> pd.DataFrame:
    """One row per image x method: the ``main`` part's metrics, with the ROAD scores joined when computed."""
    rows = parts["main"].rows
    table = rows.drop(columns=[c for c in NOT_RESULTS if c in rows])
    if "road" in parts and not parts["road"].rows.empty:
        road = parts["road"].rows
        scores = road.drop(columns=[c for c in (*NOT_RESULTS, "model", "layer", "class_idx", "pred_idx") if c in road])
        table = table.merge(scores, on=["image", "method"], how="left", validate="one_to_one")
    return table


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    write_atomic(path, table.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))


def write_tables(parts: dict[str, PartFile], out: Path) -> list[str]:
    """The measured tables: ``evaluation_results.csv`` and, when timed, ``evaluation_timings.csv`` (the only
    run-dependent numbers, kept apart). Returns the files' names."""
    rows = parts["main"].rows
    _write_csv(results_table(parts), out / "evaluation_results.csv")
    if TIME_COLUMN not in rows:
        return ["evaluation_results.csv"]
    _write_csv(rows[["image", "method", TIME_COLUMN]], out / "evaluation_timings.csv")
    return ["evaluation_results.csv", "evaluation_timings.csv"]


def write_summary(parts: dict[str, PartFile], out: Path) -> str:
    """``summary_statistics.csv``: n, mean, CIs per method x metric (localisation CIs resample source photos)."""
    results = results_table(parts)
    with_photo = results.assign(source_photo=results["source"].astype(str).str.split("+").str[0])
    _write_csv(summary_table(with_photo, [m for m in METRICS if m in results], cluster_col="source_photo",
                             class_col="class_idx", cluster_metrics=LOCALISATION), out / "summary_statistics.csv")
    return "summary_statistics.csv"


def failures(parts: dict[str, PartFile]) -> list[tuple[str, str]]:
    """The photos that failed (skipped) in the ``main`` part, with why."""
    return [(str(f), str(why)) for f, why in parts["main"].facts.get("failures", [])]


def failure_lines(parts: dict[str, PartFile]) -> dict[str, list[str]]:
    """The report's section on the photos that failed (none when every photo was evaluated)."""
    failed = failures(parts)
    return {"Images that failed (skipped)": [f"- {f}: {why}" for f, why in failed]} if failed else {}


def study_of(out: Path, parts: dict[str, PartFile]) -> Study:
    """The folder's parts as a :class:`~helpers.study.results.Study` (its definition read from the files)."""
    return Study(out, spec_of(parts), parts)

