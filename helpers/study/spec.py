"""The study's definition: which parts run, on which photos, models, layers, methods and sizes.

A :class:`StudySpec` is the ONE place where the study's sizes live (never notebook cells). Two
definitions ship: :data:`FULL` (the whole design, hours of CPU, committed under
``results/study/``) and :data:`QUICK` (a handful of photos and short curves, for the tests and CI).
A TOML file with the same fields defines others (:func:`load_spec`).

The study runs in two stages. ``val`` holds the sweeps that choose the hybrid's ``a`` (at the head,
per layer setting, per model); ``test`` holds everything scored on the test photos, some of it
with the ``a`` chosen on ALL the val photos (a part names the val part it takes ``a`` from in
``alpha_from``), so shards never choose ``a`` on their own slice.

Every part has its own hash of exactly what determines its rows (:func:`helpers.study.run.part_hash`):
adding a part, or changing one, invalidates no other part.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import tomllib

from ..config import SEED
from ..evaluation.alpha_sweep import ALPHAS
from ..evaluation.metrics import PRESETS

#: What a part computes (:mod:`helpers.study.parts` has one runner per kind).
KINDS: tuple[str, ...] = ("alpha_sweep", "evaluate", "layers", "model", "sanity", "features", "road")
STAGES: tuple[str, ...] = ("val", "test")
SPLIT_OF_STAGE: dict[str, str] = {"val": "val", "test": "test"}

#: The thesis' method and its floors on the main part: label -> (registered method or floor, options).
MAIN_METHODS: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = (
    ("gradcam", "gradcam", ()), ("layercam", "layercam", ()),
    ("hybrid@0.7", "hybrid", (("alpha", 0.7),)), ("hybrid@val", "hybrid", (("alpha", "val"),)),
    ("cam", "cam", ()), ("gradcam++", "gradcam++", ()), ("xgradcam", "xgradcam", ()),
    ("hirescam", "hirescam", ()), ("scorecam", "scorecam", ()), ("reciprocam", "reciprocam", ()),
    ("random", "random", ()), ("gaussian", "gaussian", ()))

#: The methods' labels of the thesis comparisons and the floors (ROAD on every photo); the others on fewer.
CORE: tuple[str, ...] = ("gradcam", "layercam", "hybrid@0.7", "hybrid@val", "random", "gaussian")

#: The layer settings below the head of EfficientNet-Lite0 (shallow to deep when fused).
LITE0_LAYER_SETTINGS: tuple[str | tuple[str, ...], ...] = ("stages.5", "stages.4", ("stages.4", "stages.5", "head"))


@dataclass(frozen=True)
class Part:
    """One part of the study: a ``kind`` run on the first ``n`` photos of a split's seeded order.

    ``options`` are the kind's settings (:mod:`helpers.study.parts` documents them); ``alpha_from``
    names the val part whose chosen ``a`` the part uses (test parts only); ``batch`` photos are
    computed together (shards are cut at batch boundaries, so sharding never changes a number).
    """

    name: str
    kind: str
    stage: str
    model: str = "efficientnet_lite0"
    n: int | None = None
    batch: int = 4
    alpha_from: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"part {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.stage not in STAGES:
            raise ValueError(f"part {self.name!r}: unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"part {self.name!r}: n must be >= 1 or None (all), got {self.n}")
        if self.batch < 1:
            raise ValueError(f"part {self.name!r}: batch must be >= 1, got {self.batch}")
        if self.alpha_from is not None and self.stage != "test":
            raise ValueError(f"part {self.name!r}: only test parts take a chosen alpha (alpha_from)")

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def split(self) -> str:
        return SPLIT_OF_STAGE[self.stage]


@dataclass(frozen=True)
class StudySpec:
    """A whole study: its parts and the protocol every part shares (curve steps, seed)."""

    name: str
    parts: tuple[Part, ...]
    rise_steps: int = PRESETS["rise"]["steps"]
    thesis_steps: int = PRESETS["thesis"]["steps"]
    seed: int = SEED
    description: str = ""

    def __post_init__(self) -> None:
        names = [p.name for p in self.parts]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"study {self.name!r}: part names must be unique, repeated: {duplicated}")
        for p in self.parts:
            if p.alpha_from is not None:
                src = self.part(p.alpha_from) if p.alpha_from in names else None
                if src is None or src.stage != "val" or src.kind != "alpha_sweep":
                    raise ValueError(f"part {p.name!r}: alpha_from {p.alpha_from!r} is not a val alpha sweep "
                                     "of this study")
        if self.rise_steps < 1 or self.thesis_steps < 1:
            raise ValueError("rise_steps and thesis_steps must be >= 1")

    def part(self, name: str) -> Part:
        """The part called ``name`` (a clear error naming the valid ones otherwise)."""
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"no part {name!r} in study {self.name!r}; parts: {', '.join(p.name for p in self.parts)}")

    def stage(self, stage: str) -> tuple[Part, ...]:
        """The parts of one stage, in definition order."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
        return tuple(p for p in self.parts if p.stage == stage)


def _sweep(name: str, model: str, n: int | None, settings: tuple, alphas=ALPHAS, additive=(), with_max=False,
           batch: int = 4, stage: str = "val", modes=("insertion", "deletion")) -> Part:
    return Part(name, "alpha_sweep", stage, model, n, batch, options=(
        ("settings", settings), ("alphas", tuple(alphas)), ("additive", tuple(additive)), ("with_max", with_max),
        ("modes", tuple(modes))))


def _design(name: str, n_val: int | None, n_test: int | None, n_sanity: int, batch: int, description: str,
            n_road_extra: int | None = None, **protocol: Any) -> StudySpec:
    """The study's design at the given sizes (the full and the quick definition differ only in sizes)."""
    models = ("efficientnet_lite1", "efficientnet_lite2")
    parts = [
        _sweep("alpha_head", "efficientnet_lite0", n_val, ("head",), additive=(0.5,), with_max=True, batch=batch),
        _sweep("alpha_layers", "efficientnet_lite0", n_val, LITE0_LAYER_SETTINGS, batch=batch),
        *[_sweep(f"alpha_{m[-5:]}", m, n_val, ("target",), batch=batch) for m in models],
        Part("main", "evaluate", "test", "efficientnet_lite0", n_test, 1, "alpha_head",
             (("methods", MAIN_METHODS),)),
        Part("layers", "layers", "test", "efficientnet_lite0", n_test, batch, "alpha_layers",
             (("settings", LITE0_LAYER_SETTINGS),)),
        *[Part(m[-5:], "model", "test", m, n_test, batch, f"alpha_{m[-5:]}") for m in models],
        Part("sanity", "sanity", "test", "efficientnet_lite0", n_sanity, batch, "alpha_head",
             (("methods", ("gradcam", "layercam", "hybrid")),)),
        # adaptive a: the per-image upper bound (every grid alpha's insertion AUC on every test photo; the
        # hybrid at a predicted alpha is read from these rows) and the predictor's features on val and test
        _sweep("oracle", "efficientnet_lite0", n_test, ("head",), batch=batch, stage="test", modes=("insertion",)),
        Part("features_val", "features", "val", "efficientnet_lite0", n_val, batch),
        Part("features_test", "features", "test", "efficientnet_lite0", n_test, batch),
        # ROAD (its own parts, so adding it invalidated nothing): the thesis methods and floors, and the six
        # further methods (on the first n_road_extra photos; all of them in the full design, at ~0.6 s per map here)
        Part("road", "road", "test", "efficientnet_lite0", n_test, 1, "alpha_head",
             (("methods", tuple(m for m in MAIN_METHODS if m[0] in CORE)),)),
        Part("road_extra", "road", "test", "efficientnet_lite0", n_road_extra, 1, "alpha_head",
             (("methods", tuple(m for m in MAIN_METHODS if m[0] not in CORE)),)),
    ]
    return StudySpec(name, tuple(parts), description=description, **protocol)


#: The whole design: a on all 200 val photos, every method on all 600 test photos.
FULL = _design("full", None, None, 50, 4, "the full design: 200 val photos, 600 test photos, sanity on 50")
#: A smoke-test definition: 2 val photos, 3 test photos, 4-step curves.
QUICK = _design("quick", 2, 3, 2, 2, "a smoke test: 2 val and 3 test photos, 4-step curves", n_road_extra=2,
                rise_steps=4, thesis_steps=4)
SPECS: dict[str, StudySpec] = {"full": FULL, "quick": QUICK}


def _tuples(value: Any) -> Any:
    """TOML lists -> tuples, recursively (a spec is hashable and compares by value)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _tuples(v)) for k, v in value.items()))
    return value


def spec_from_mapping(data: Mapping[str, Any], name: str) -> StudySpec:
    """A :class:`StudySpec` from a parsed TOML table: top-level protocol keys and ``[[parts]]`` tables."""
    known = {f.name for f in dataclasses.fields(StudySpec)} - {"parts", "name"}
    unknown = set(data) - known - {"parts"}
    if unknown:
        raise ValueError(f"study {name!r}: unknown key(s) {sorted(unknown)}; valid: parts, {', '.join(sorted(known))}")
    parts = []
    for i, table in enumerate(data.get("parts", [])):
        fields = {f.name for f in dataclasses.fields(Part)}
        bad = set(table) - fields
        if bad:
            raise ValueError(f"study {name!r}, part {i + 1}: unknown key(s) {sorted(bad)}; "
                             f"valid: {', '.join(sorted(fields))}")
        table = dict(table)
        table["options"] = _tuples(table.get("options", {}))
        parts.append(Part(**table))
    return StudySpec(name=name, parts=tuple(parts), **{k: v for k, v in data.items() if k != "parts"})


def load_spec(spec: str | Path | StudySpec) -> StudySpec:
    """``"full"``, ``"quick"``, a path to a TOML file, or a :class:`StudySpec` -> the definition."""
    if isinstance(spec, StudySpec):
        return spec
    if str(spec) in SPECS:
        return SPECS[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such study definition (use full, quick or a TOML file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid TOML study definition ({err})") from None
    return spec_from_mapping(data, path.stem)
