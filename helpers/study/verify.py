"""Check a committed study by recomputing a seeded sample of its rows from scratch.

``make reproduce`` runs :func:`verify` after the notebooks: at least 16 test photos x every method of
the main part and 8 val photos of the head's alpha sweep are recomputed (no cache) and compared
row by row with the committed files. It fails if an explained class differs, if any AUC differs by
more than :data:`MAX_DIFF`, or if the mean absolute difference exceeds :data:`MEAN_DIFF`
(tolerances of float arithmetic across machines and batch compositions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..cam.models import load_model
from ..config import SEED
from .parts import RUNNERS
from .results import StalePartError, rerun_command
from .run import alpha_for, part_hash, part_photos
from .spec import StudySpec, load_spec
from .store import StudyFileError, part_path, read_part

MAX_DIFF = 1e-2
MEAN_DIFF = 1e-4
#: Columns that identify a row within a part.
KEYS: tuple[str, ...] = ("image", "layer", "method", "fusion", "alpha", "step")


def compare(committed: pd.DataFrame, recomputed: pd.DataFrame) -> dict[str, float]:
    """Row-by-row comparison on the key columns: rows, class mismatches, max and mean |AUC difference|."""
    keys = [k for k in KEYS if k in recomputed.columns]
    left, right = (t.assign(**{k: t[k].fillna(-1) for k in keys if t[k].dtype.kind == "f"})
                   for t in (committed, recomputed))
    joined = right.merge(left, on=keys, how="left", suffixes=("", "_committed"), indicator=True)
    missing = int((joined["_merge"] != "both").sum())
    aucs = [c for c in recomputed.columns if "_auc" in c and recomputed[c].dtype.kind == "f"
            and not recomputed[c].isna().all()] or [c for c in ("spearman",) if c in recomputed.columns]
    diffs = np.abs(np.concatenate([(joined[c] - joined[f"{c}_committed"]).to_numpy(float) for c in aucs]))
    diffs = diffs[~np.isnan(diffs)]
    return {"rows": len(recomputed), "unmatched": missing,
            "class_mismatches": int((joined["class_idx"] != joined["class_idx_committed"]).sum()),
            "max_abs_diff": float(diffs.max()) if diffs.size else float("nan"),
            "mean_abs_diff": float(diffs.mean()) if diffs.size else float("nan")}


def verify(spec: str | Path | StudySpec, folder: str | Path, n_test: int = 16, n_val: int = 8,
           parts: Sequence[str] = ("main", "alpha_head"), seed: int = SEED) -> pd.DataFrame:
    """Recompute a seeded sample of each part's photos and compare with ``folder``; one row per part."""
    spec, folder = load_spec(spec), Path(folder)
    report = []
    for name in parts:
        part = spec.part(name)
        committed = read_part(part_path(folder, name))
        if not committed.complete:
            raise StudyFileError(f"{part_path(folder, name)}: part {name!r} is incomplete (a shard); merge it first")
        bundle = load_model(part.model)
        photos = part_photos(part, spec)
        alpha = alpha_for(spec, part, folder)
        expected = part_hash(spec, part, bundle, photos, alpha)
        if committed.facts["hash"] != expected:
            raise StalePartError(f"part {name!r} in {folder} is stale (hash {committed.facts['hash']}, the code gives "
                                 f"{expected}); re-run it: {rerun_command(spec, name, folder)}")
        n = min(n_test if part.stage == "test" else n_val, len(photos.files))
        pick = sorted(np.random.default_rng(seed).choice(len(photos.files), n, replace=False))
        samples = photos.load(bundle, [photos.files[i] for i in pick])
        rows = pd.concat([RUNNERS[part.kind](part, spec, bundle, samples[i:i + part.batch], alpha)
                          for i in range(0, n, part.batch)], ignore_index=True)
        result = compare(committed.rows, rows)
        result["passed"] = bool(result["unmatched"] == 0 and result["class_mismatches"] == 0
                                and result["max_abs_diff"] <= MAX_DIFF and result["mean_abs_diff"] <= MEAN_DIFF)
        report.append({"part": name, "photos": n, **result})
    return pd.DataFrame(report)
