"""What notebook 4 and the explorer read from the study folder: fresh parts only, the sweeps, the predicted a.

A committed part is used only while its hash (:func:`helpers.study.run.part_hash`) equals the one
the code computes now; otherwise :func:`fresh_part` stops with a :class:`StalePartError` that names
the part and the command that re-runs it. :func:`sweep_rows` turns an ``alpha_sweep`` part into the
table of :mod:`helpers.evaluation.alpha` (image, fusion, alpha, insertion, deletion), and
:func:`layer_choices` says per layer setting which a the rule picks and where that makes the hybrid
one of its parents.
:class:`StudyAlphaPredictor` is the explorer's predicted-a hook: the ridge rule of
:mod:`helpers.evaluation.adaptive` fitted on the val photos only (parts ``alpha_head`` and
``features_val``); where those files are missing or stale it predicts nothing and says why.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..evaluation.adaptive import (
    FEATURES,
    AlphaPredictor,
    alpha_gains,
    fit_alpha_predictor,
    map_features,
    predict_alpha,
)
from ..evaluation.alpha_sweep import choose_alpha, summarise
from ..study.results import STUDY_DIR, StalePartError, check_parts, rerun_command
from ..study.run import Bundles
from ..study.spec import StudySpec, load_spec
from ..study.store import PartFile, StudyFileError, part_path, read_part


def fresh_part(folder: str | Path, spec: str | Path | StudySpec, name: str, bundle: ModelBundle) -> PartFile | None:
    """Part ``name`` of the study folder, checked against the code: None where its file is absent;
    a :class:`StalePartError` (naming the part and the re-run command) where it is a shard or its
    hash differs from the one :func:`~helpers.study.results.check_parts` computes for ``bundle``; a
    warning where its photos are not on this machine (the hash cannot be checked)."""
    spec, folder = load_spec(spec), Path(folder)
    part = spec.part(name)
    if bundle.name != part.model:
        raise ValueError(f"part {name!r} is computed with {part.model}, not {bundle.name}")
    path = part_path(folder, name)
    if not path.is_file():
        return None
    found = read_part(path)
    if not found.complete:
        raise StalePartError(f"{path}: part {name!r} holds shard {found.facts['shard']} only; merge its shards "
                             f"(`python -m helpers study merge`) or run `{rerun_command(spec, name, folder)}`")
    for why in check_parts(spec, folder, {name: found}, bundles=Bundles.holding(bundle)).values():
        warnings.warn(f"{path}: part {name!r} not checked against the code: {why}", stacklevel=2)
    return found


def sweep_rows(rows: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
    """An ``alpha_sweep`` part's rows of one layer setting (default: the first) as the alpha module's table:
    image, fusion, alpha, insertion, deletion (AUCs of the rise preset)."""
    layer = rows["layer"].iloc[0] if layer is None else layer
    if layer not in set(rows["layer"]):
        raise ValueError(f"the sweep has no layer setting {layer!r}; it has {sorted(set(rows['layer']))}")
    table = rows[rows["layer"] == layer].rename(columns={"insertion_auc": "insertion", "deletion_auc": "deletion"})
    return table[["image", "fusion", "alpha", "insertion", "deletion"]].reset_index(drop=True)


class StudyAlphaPredictor:
    """The explorer's predicted a (:class:`helpers.teaching.interactive.HybridExplorer`'s hook).

    Fitted once, on the val photos only: features of ``features_val``, target the per-alpha insertion
    gains over Grad-CAM of ``alpha_head`` (:func:`helpers.evaluation.adaptive.fit_alpha_predictor`).
    Called with (bundle, image, class, layer) it returns the predicted a of that image and class at
    the layer it was fitted on, or a sentence saying why there is none (files missing or stale,
    another layer or model).
    """

    def __init__(self, folder: str | Path = STUDY_DIR, spec: str | Path | StudySpec = "full",
                 bundle: ModelBundle | None = None) -> None:
        self.folder, self.spec = Path(folder), load_spec(spec)
        self.model: AlphaPredictor | None = None
        self.layer, self.model_name, self.n_val = "", self.spec.part("alpha_head").model, 0
        self.reason = ""
        if bundle is not None and bundle.name != self.model_name:
            self.reason = f"no predicted a: the study fits it for {self.model_name} only, not {bundle.name}"
            return
        try:
            parts = {n: (fresh_part(self.folder, self.spec, n, bundle) if bundle is not None
                         else self._read(n)) for n in ("alpha_head", "features_val")}
        except StudyFileError as err:
            self.reason = f"no predicted a: {err}"
            return
        missing = [n for n, p in parts.items() if p is None]
        if missing:
            self.reason = (f"no predicted a: the val part(s) {', '.join(missing)} are not in {self.folder.name}/ yet "
                           f"(`{rerun_command(self.spec, missing[-1], self.folder)}`)")
            return
        sweep = sweep_rows(parts["alpha_head"].rows)
        self.layer = str(parts["alpha_head"].rows["layer"].iloc[0])
        gains = alpha_gains(sweep)
        features = parts["features_val"].rows.set_index("image")[list(FEATURES)]
        absent = sorted(set(gains.index) - set(features.index))
        if absent:
            self.reason = f"no predicted a: features_val lacks {len(absent)} of alpha_head's photos (e.g. {absent[0]})"
            return
        self.model = fit_alpha_predictor(features.loc[gains.index], gains, ["val"] * len(gains))
        self.n_val = len(gains)

    def _read(self, name: str) -> PartFile | None:
        path = part_path(self.folder, name)
        return read_part(path) if path.is_file() else None

    def __call__(self, bundle: ModelBundle, image: torch.Tensor, class_idx: int, layer: str) -> float | str:
        """The predicted a of ``image`` (3, H, W) explained for ``class_idx`` at ``layer``, or why there is none."""
        if self.model is None:
            return self.reason
        if bundle.name != self.model_name or layer != self.layer:
            return f"no predicted a: the rule was fitted for {self.model_name} at layer {self.layer} only"
        features = map_features(bundle, image[None], [int(class_idx)], layer)
        return float(predict_alpha(self.model, features)[0])


#: The a at which the hybrid IS one of its parents (the limits proved in notebook 4, section 4.2).
PARENTS: dict[float, str] = {1.0: "Grad-CAM", 0.0: "LayerCAM"}


def layer_choices(sweeps: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per layer setting (``{label: sweep table}`` of :func:`sweep_rows`): the a notebook 4's rule chooses
    (:func:`helpers.evaluation.alpha.choose_alpha`), n, its mean AUCs, and ``equals``: the parent method
    the hybrid is identical to at that a (``"Grad-CAM"`` at a = 1, ``"LayerCAM"`` at a = 0, else empty)."""
    rows = []
    for label, table in sweeps.items():
        choice = choose_alpha(summarise(table))
        rows.append({"setting": label, "alpha": choice["alpha"], "n_images": choice["n_images"],
                     "insertion_mean": choice["insertion_mean"], "deletion_mean": choice["deletion_mean"],
                     "equals": PARENTS.get(choice["alpha"], "")})
    return pd.DataFrame(rows).set_index("setting")
