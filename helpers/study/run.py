"""Run a study definition: stage by stage, shard by shard, resumable, with a hash per part.

:func:`run_stage` computes one stage's parts (or a shard of them: ``shard=(k, n)`` takes the k-th of
n contiguous slices of each part's photos, cut at batch boundaries so sharding never changes a
number). Each batch's rows are cached as soon as they exist (:mod:`helpers.evaluation.cache`:
atomic, locked), so a killed run resumes where it stopped. Each part is written to its own Parquet
file (:mod:`helpers.study.store`) and described in ``PROVENANCE.json``: code commit, the part's
hash, package versions, machine, dates and wall time.

A part's hash (:func:`part_hash`) covers exactly what determines its rows: the part's definition,
the shared protocol, :data:`CODE_VERSION` of the metrics, the model's weights, the photos (files and
their sha256) and the chosen alpha it uses. Test parts take alpha from the merged val parts
(``alpha_from``), never from their own slice.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..cam.backend import weights_hash
from ..cam.bundle import ModelBundle
from ..cam.models import load_model
from ..config import IMAGENET_MANIFEST, MANIFEST, ROOT, progress_bar
from ..data.imagenet import IMAGENET, PACKAGED, DatasetUnavailable, configured_root, locate
from ..data.images import load_samples, read_manifest
from ..evaluation import metrics as M
from ..evaluation.alpha_sweep import choose_alpha, summarise
from ..evaluation.cache import cached
from ..evaluation.runner import DISK_ERRNOS, EvalConfig
from .parts import RUNNERS
from .spec import Part, StudySpec, load_spec
from .store import PartFile, StudyFileError, part_path, read_part, read_provenance, write_part, write_provenance

#: Bump when a metric's code changes its numbers: every part's hash changes with it.
CODE_VERSION = 1
#: Packages whose versions are recorded with every part.
PACKAGES: tuple[str, ...] = ("torch", "torchvision", "onnxruntime", "numpy", "scipy", "pandas", "pyarrow",
                             "timm", "efficientnet-lite-pytorch", "scikit-learn")
DEFAULT_CACHE = ROOT / "results" / ".cache" / "study"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: need 1 <= K <= N")
    return k, n


def shard_batches(n_photos: int, batch: int, k: int, n: int) -> list[range]:
    """The batches (ranges of photo positions) of shard k of n: contiguous, cut at batch boundaries."""
    starts = list(range(0, n_photos, batch))
    mine = starts[(k - 1) * len(starts) // n: k * len(starts) // n]
    return [range(s, min(s + batch, n_photos)) for s in mine]


@dataclass
class PartPhotos:
    """A part's photos: the dataset, the ordered files with their sha256, and where to read them.

    ``annotations`` (a folder of the user's photos: each file's label and boxes) join the part's hash
    when given, so parts that read the same files under other labels never merge."""

    dataset: str
    files: list[str]
    sha256: dict[str, str]
    manifest: Path
    root: Path
    split: str
    annotations: dict[str, Any] | None = None

    def load(self, bundle: ModelBundle, files: Sequence[str]) -> list:
        """The given files as samples preprocessed for ``bundle`` (only these are decoded)."""
        return load_samples(bundle, self.split, manifest=self.manifest, root=self.root, files=files)


@functools.lru_cache(maxsize=None)
def dataset_source() -> tuple[str, Path, Path]:
    """(dataset name, manifest, photo folder): the real photos when present (verified once per process),
    else the packaged ones (after printing why)."""
    try:
        return IMAGENET, IMAGENET_MANIFEST, locate(progress=False)
    except DatasetUnavailable as err:
        print(err)
        return PACKAGED, MANIFEST, MANIFEST.parent


#: The manifest of each dataset a part can record (the photos' files and sha256, without reading a photo).
DATASET_MANIFESTS: dict[str, Path] = {IMAGENET: IMAGENET_MANIFEST, PACKAGED: MANIFEST}


def part_photos(part: Part, spec: StudySpec, dataset: str | None = None) -> PartPhotos:
    """The first ``part.n`` photos of the split's seeded order (machine-independent; the order
    :func:`helpers.data.images.seeded_subset` gives the split's samples), read from the manifest only: of the
    photos on this machine, or of the ``dataset`` a part recorded (no photo is located or hashed)."""
    if dataset is None:
        dataset, manifest, root = dataset_source()
    else:
        manifest = DATASET_MANIFESTS[dataset]
        root = configured_root() if dataset == IMAGENET else manifest.parent
    rows = read_manifest(manifest)
    rows = rows[rows["split"] == part.split]
    order = np.random.default_rng(spec.seed).permutation(len(rows))[:part.n]
    files = [rows["file"].iloc[i] for i in order]
    if part.n is not None and len(files) < part.n:
        raise ValueError(f"part {part.name!r} needs {part.n} {part.split} photos; {dataset} has {len(rows)}")
    sha = dict(zip(rows["file"], rows["sha256"], strict=True))
    return PartPhotos(dataset, files, {f: sha[f] for f in files}, manifest, root, part.split)


def protocol_facts(spec: StudySpec, part: Part) -> dict[str, Any]:
    """The protocol settings a part's rows depend on (presets, tie rule, the evaluation's defaults)."""
    facts = {"rise_steps": spec.rise_steps, "thesis_steps": spec.thesis_steps, "seed": spec.seed,
             "presets": M.PRESETS, "tie_resolution": M.TIE_RESOLUTION}
    if part.kind == "evaluate":
        config = EvalConfig(rise_steps=spec.rise_steps, thesis_steps=spec.thesis_steps)
        facts["eval_config"] = dataclasses.asdict(config)
    return facts


def model_identity(bundle: ModelBundle) -> dict[str, str]:
    """What identifies a model in a part's hash: its name, the hash of its weights, its CAM layer."""
    return {"name": bundle.name, "weights": weights_hash(bundle.model), "layer": bundle.target_layer}


def part_hash(spec: StudySpec, part: Part, bundle: ModelBundle, photos: PartPhotos, alpha: Any) -> str:
    """SHA-256 (16 hex digits) of everything that determines the part's rows."""
    return hash_of(spec, part, model_identity(bundle), photos, alpha)


def hash_of(spec: StudySpec, part: Part, model: dict[str, str], photos: PartPhotos, alpha: Any) -> str:
    """:func:`part_hash` for a model given by its identity (:func:`model_identity`)."""
    facts = {"part": dataclasses.asdict(part), "protocol": protocol_facts(spec, part), "code_version": CODE_VERSION,
             "model": dict(model),
             "dataset": photos.dataset, "photos": [(f, photos.sha256[f]) for f in photos.files], "alpha": alpha}
    if photos.annotations is not None:
        facts["annotations"] = photos.annotations
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chosen_alphas(rows: pd.DataFrame) -> dict[str, float]:
    """Per layer setting of a val sweep: the alpha notebook 4's rule chooses (:func:`choose_alpha`)."""
    table = rows.rename(columns={"insertion_auc": "insertion", "deletion_auc": "deletion"})
    return {label: choose_alpha(summarise(g[["image", "fusion", "alpha", "insertion", "deletion"]]))["alpha"]
            for label, g in table.groupby("layer", sort=False)}


def alpha_for(spec: StudySpec, part: Part, alpha_dir: str | Path) -> float | dict[str, float] | None:
    """The chosen alpha a test part uses, from the COMPLETE val part it names (one value, or one per setting)."""
    if part.alpha_from is None:
        return None
    path = part_path(alpha_dir, part.alpha_from)
    if not path.is_file():
        raise StudyFileError(f"part {part.name!r} needs the val part {part.alpha_from!r}: {path} is missing; run "
                             f"`python -m helpers study --spec {spec.name} --stage val` (and merge its shards) first")
    source = read_part(path)
    if not source.complete:
        raise StudyFileError(f"{path}: val part {part.alpha_from!r} is a shard ({source.facts['shard']}); "
                             "merge all its shards first (`python -m helpers study merge`)")
    alphas = chosen_alphas(source.rows)
    return alphas if part.kind == "layers" else next(iter(alphas.values()))


#: CPU features that change the speed of these machines by 2x (the README's benchmark quotes them).
CPU_FLAGS: tuple[str, ...] = ("avx512f", "avx512_bf16", "amx_tile", "avx2")


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """CPU model and speed-relevant flags (from ``cpuinfo``), thread count and GPU (if any) of this machine."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path(cpuinfo).read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cpu_flags": " ".join(f for f in CPU_FLAGS if f in flags),
            "cores": str(torch.get_num_threads()), "gpu": gpu, "platform": platform.platform()}


# What a run writes (data, executed notebooks): changes there do not make the code that ran "dirty".
OUTPUT_PATHS: tuple[str, ...] = ("results", "*.ipynb")


def code_commit(root: Path = ROOT) -> str:
    """The repository's commit, ``+dirty`` when tracked files other than outputs
    (:data:`OUTPUT_PATHS`) differ from it, or ``unknown`` outside a repository."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        excluded = [f":(exclude){p}" for p in OUTPUT_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (``absent`` for those not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays -> Python values (for the batch cache's JSON)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in the study cache")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Bundles:
    """Models loaded once per run, released when another model is needed (memory stays bounded)."""

    def __init__(self, device: str | None = None) -> None:
        self.device, self.name, self.bundle = device, None, None

    @classmethod
    def holding(cls, bundle: ModelBundle) -> Bundles:
        """Bundles that start with ``bundle`` loaded (under its model's name)."""
        held = cls(str(bundle.device))
        held.name, held.bundle = bundle.name, bundle
        return held

    def get(self, name: str) -> ModelBundle:
        if name != self.name:
            self.bundle, self.name = None, None
            self.bundle, self.name = load_model(name, device=self.device), name
        return self.bundle


@dataclass(frozen=True)
class PartRun:
    """How a part runs: its ``shard`` (k, n), the folder of the merged val parts its chosen a comes from
    (``alpha_dir``), the per-batch ``cache`` (None: none) and the progress bar. A folder of the user's
    photos (``python -m helpers evaluate``) gives its ``photos`` and ``alpha`` instead, and skips a
    failing photo (reported on stderr, listed in the part's facts) instead of stopping (``skip_failures``)."""

    shard: tuple[int, int] = (1, 1)
    alpha_dir: Path | None = None
    cache: Path | None = None
    progress: bool = True
    photos: PartPhotos | None = None
    alpha: float | None = None
    skip_failures: bool = False


def _skipped(files: Sequence[str], err: Exception) -> list[list[str]]:
    """Report a batch that failed (one line per photo, the traceback's tail once) and list it as failed."""
    reason = f"{type(err).__name__}: {err}"
    for f in files:
        print(f"evaluate: skipped {f}: {reason}", file=sys.stderr)
    if not isinstance(err, OSError):
        print("".join(traceback.format_exception(err)[-3:]).rstrip("\n"), file=sys.stderr)
    return [[f, reason] for f in files]


def run_part(spec: StudySpec, part: Part, bundle: ModelBundle, out: Path, run: PartRun = PartRun()) -> dict[str, Any]:
    """Compute one part (or its shard) and write ``<out>/<part>.parquet``; returns its provenance entry."""
    start, t0 = _now(), time.perf_counter()
    alpha = run.alpha if run.alpha is not None else alpha_for(spec, part, run.alpha_dir or out)
    photos = run.photos or part_photos(part, spec)
    h = part_hash(spec, part, bundle, photos, alpha)
    batches = shard_batches(len(photos.files), part.batch, *run.shard)
    mine = [photos.files[i] for b in batches for i in b]
    existing = part_path(out, part.name)
    if existing.is_file():
        try:
            old = read_part(existing)
            if old.facts["hash"] == h and old.facts["photos"] == mine and list(old.facts["shard"]) == list(run.shard) \
                    and not old.facts.get("failures"):
                return read_provenance(out)["parts"].get(part.name, {})
        except StudyFileError:
            pass
    tables, failures = [], []
    desc = f"{part.name} ({part.stage}, shard {run.shard[0]}/{run.shard[1]})"
    for b in progress_bar(batches, desc=desc, disable=not run.progress):
        files = [photos.files[i] for i in b]

        def compute(files=files) -> dict[str, Any]:
            rows = RUNNERS[part.kind](part, spec, bundle, photos.load(bundle, files), alpha)
            # through JSON here too, so a cached batch and a computed one give the same frame (floats round-trip)
            return {"rows": json.loads(json.dumps(rows.to_dict(orient="split"), default=_jsonable))}

        key = hashlib.sha256(json.dumps([h, files]).encode()).hexdigest()[:16]
        try:
            result = compute() if run.cache is None else cached(run.cache, key, f"{part.name}-{b.start}", compute,
                                                                parts=("rows",))
        except Exception as err:   # with skip_failures, one bad photo must not stop the others
            if not run.skip_failures or (isinstance(err, OSError) and err.errno in DISK_ERRNOS):
                raise
            failures += _skipped(files, err)
            continue
        table = result["rows"]
        tables.append(pd.DataFrame(table["data"], columns=table["columns"]))
    rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    rows.insert(0, "part", part.name)
    rows.insert(1, "hash", h)
    facts = {"part": part.name, "kind": part.kind, "stage": part.stage, "hash": h, "shard": list(run.shard),
             "photos": mine, "part_photos": photos.files, "dataset": photos.dataset, "model": part.model,
             "alpha": alpha, "study": spec.name, "definition": dataclasses.asdict(part),
             "protocol": {"rise_steps": spec.rise_steps, "thesis_steps": spec.thesis_steps, "seed": spec.seed},
             **({"failures": failures} if failures else {})}
    write_part(out, PartFile(rows, facts))
    return {"hash": h, "kind": part.kind, "stage": part.stage, "model": part.model, "dataset": photos.dataset,
            "n_photos": len(photos.files), "alpha": alpha,
            "shards": [{"shard": f"{run.shard[0]}/{run.shard[1]}", "photos": len(mine), "start": start,
                        "end": _now(), "wall_s": round(time.perf_counter() - t0, 1), "machine": machine(),
                        "commit": code_commit(), "packages": versions()}]}


def record(out: Path, spec: StudySpec, name: str, entry: dict[str, Any]) -> None:
    """Part ``name``'s provenance ``entry`` into ``<out>/PROVENANCE.json`` (the other parts' entries kept)."""
    prov = read_provenance(out)
    prov["parts"][name] = entry
    prov["study"] = spec.name
    write_provenance(out, prov)


def run_stage(spec: str | Path | StudySpec, stage: str, out: str | Path, shard: tuple[int, int] = (1, 1),
              alpha_from: str | Path | None = None, parts: Sequence[str] | None = None,
              cache: str | Path | None = DEFAULT_CACHE, progress: bool = True, device: str | None = None) -> Path:
    """Run one stage (its ``parts``, default all) of a study definition into ``out``; returns ``out``."""
    spec = load_spec(spec)
    out = Path(out)
    chosen = spec.stage(stage) if parts is None else tuple(p for p in spec.stage(stage) if p.name in set(parts))
    unknown = sorted(set(parts or ()) - {p.name for p in spec.parts})
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; parts of {spec.name!r}: {', '.join(p.name for p in spec.parts)}")
    bundles = Bundles(device)
    run = PartRun(tuple(shard), Path(alpha_from) if alpha_from is not None else out,
                  Path(cache) if cache is not None else None, progress)
    for part in chosen:
        record(out, spec, part.name, run_part(spec, part, bundles.get(part.model), out, run))
    return out


def run_study(spec: str | Path | StudySpec, out: str | Path, stage: str | None = None, **kwargs: Any) -> Path:
    """Both stages in order (val, then test with alpha from the val just written), or one ``stage``."""
    spec = load_spec(spec)
    for st in ([stage] if stage else ["val", "test"]):
        run_stage(spec, st, out, **kwargs)
    return Path(out)
