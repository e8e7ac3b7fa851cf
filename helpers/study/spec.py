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
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import tomllib

from ..cam.engine import METHODS
from ..config import SEED
from ..evaluation.alpha_sweep import ALPHAS
from ..evaluation.floors import FLOORS
from ..evaluation.metrics import MODES, PRESETS
from ..evaluation.policy import CORE_LABELS, MAIN_METHODS, METHODS_2, THESIS_ALPHA

#: What a part computes (:mod:`helpers.study.parts` has one runner per kind).
KINDS: tuple[str, ...] = ("alpha_sweep", "evaluate", "layers", "model", "sanity", "features", "road")
STAGES: tuple[str, ...] = ("val", "test")
SPLIT_OF_STAGE: dict[str, str] = {"val": "val", "test": "test"}


#: The layer settings below the head of EfficientNet-Lite0 (shallow to deep when fused).
LITE0_LAYER_SETTINGS: tuple[str | tuple[str, ...], ...] = ("stages.5", "stages.4", ("stages.4", "stages.5", "head"))


#: A part's name is its file's name (``<name>.parquet`` beside the others): a plain file name.
PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")
#: The options each kind reads (:mod:`helpers.study.parts`): (required keys, optional keys).
OPTION_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alpha_sweep": (("settings", "alphas"), ("additive", "with_max", "modes")), "evaluate": (("methods",), ("timed",)),
    "layers": (("settings",), ()), "model": ((), ()), "sanity": (("methods",), ("steps",)), "features": ((), ()),
    "road": (("methods",), ())}
#: Kinds whose rows always use the chosen alpha, so need ``alpha_from`` (an evaluate or ROAD part when a method's
#: option is ``"val"``, a sanity part when it draws ``hybrid``).
USES_ALPHA: tuple[str, ...] = ("layers", "model")


def uses_chosen_alpha(part: Part) -> bool:
    """Whether the part's rows use the a chosen on the val photos (then ``alpha_from`` names its sweep)."""
    methods = part.opts.get("methods", ())
    if part.kind in ("evaluate", "road"):
        return any(value == "val" for _, _, options in methods for _, value in options)
    return part.kind in USES_ALPHA or "hybrid" in methods


def _whole(value: Any, low: int = 1) -> bool:
    """A whole number (not a bool) >= ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (nested lists and pairs included)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return all(map(_finite, value)) if isinstance(value, (tuple, list)) else True


def _fractions(value: Any, empty: bool = False) -> bool:
    """A list of numbers in [0, 1] (non-empty unless ``empty``)."""
    return isinstance(value, (tuple, list)) and (empty or len(value) > 0) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in value)


def _names(value: Any) -> bool:
    """A non-empty list of distinct non-empty strings."""
    return (isinstance(value, (tuple, list)) and len(value) > 0 and len(set(map(str, value))) == len(value)
            and all(isinstance(v, str) and v for v in value))


def _method_list(value: Any) -> bool:
    """``[label, method, {option: value}]`` items with distinct labels and registered methods or floors."""
    def item(m: Any) -> bool:
        return (isinstance(m, (tuple, list)) and len(m) == 3 and isinstance(m[0], str) and m[0] != ""
                and m[1] in (*METHODS, *FLOORS) and isinstance(m[2], (tuple, list))
                and all(isinstance(o, (tuple, list)) and len(o) == 2 and isinstance(o[0], str) for o in m[2]))
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(map(item, value)) \
        and _names([m[0] for m in value])


#: A sanity part's hybrid at a fixed a, e.g. ``hybrid@0.7`` (plain ``hybrid`` is the hybrid at the chosen a).
FIXED_HYBRID = re.compile(r"hybrid@(0(\.[0-9]+)?|1(\.0+)?)")


def fixed_hybrid_alpha(name: str) -> float | None:
    """The a of a sanity method named ``hybrid@A`` (A in [0, 1]); None for every other name."""
    return float(name.split("@", 1)[1]) if isinstance(name, str) and FIXED_HYBRID.fullmatch(name) else None


def _sanity_methods(value: Any) -> bool:
    """Registered CAM methods or ``hybrid@A`` at a fixed A in [0, 1], distinct (``hybrid`` is the hybrid at
    the chosen alpha, drawn by :func:`helpers.study.parts.run_sanity`)."""
    return _names(value) and all(m in METHODS or fixed_hybrid_alpha(m) is not None for m in value)


def _settings(value: Any) -> bool:
    """A non-empty list of layer names or of lists of layers (fused)."""
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(
        (isinstance(s, str) and s != "") or _names(s) for s in value)


#: Per option: (its check, what it must be).
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "settings": (_settings, "a non-empty list of layer names (or of lists of layers, fused)"),
    "alphas": (_fractions, "a non-empty list of numbers in [0, 1]"),
    "additive": (lambda v: _fractions(v, empty=True), "a list of numbers in [0, 1]"),
    "with_max": (lambda v: isinstance(v, bool), "true or false"),
    "timed": (lambda v: isinstance(v, bool), "true or false"),
    "modes": (lambda v: _names(v) and set(v) <= set(MODES), f"a non-empty list of distinct modes of {MODES}"),
    "steps": (_whole, "a whole number >= 1"),
    "methods": (_method_list, f"a non-empty list of [label, method, {{options}}] with distinct labels, the methods "
                              f"of {', '.join((*METHODS, *FLOORS))}"),
    "sanity methods": (_sanity_methods, f"a non-empty list of distinct methods of {', '.join(METHODS)} or "
                                        "hybrid@A at a fixed A in [0, 1]"),
}


def part_problem(part: Part) -> str | None:
    """What is wrong with a part's fields as data (None: nothing): types, ranges, finite numbers, a plain
    file name as its name, the options its kind reads."""
    if not (isinstance(part.name, str) and PART_NAME.fullmatch(part.name)):
        return (f"name must be a plain file name (letters, digits and _ - . @ +, not starting with a dot, at most "
                f"100 characters), got {part.name!r}")
    if part.kind not in KINDS:
        return f"unknown kind {part.kind!r}; valid: {', '.join(KINDS)}"
    if part.stage not in STAGES:
        return f"unknown stage {part.stage!r}; valid: {', '.join(STAGES)}"
    if not (isinstance(part.model, str) and part.model):
        return f"model must be a model's name, got {part.model!r}"
    if part.n is not None and not _whole(part.n):
        return f"n must be a whole number >= 1 (or absent: all photos), got {part.n!r}"
    if not _whole(part.batch):
        return f"batch must be a whole number >= 1, got {part.batch!r}"
    if part.alpha_from is not None and not (isinstance(part.alpha_from, str) and part.stage == "test"):
        return f"only test parts take a chosen alpha (alpha_from, a part's name), got {part.alpha_from!r}"
    if not (isinstance(part.options, tuple) and all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str)
                                                    for o in part.options)):
        return f"options must be a table of settings, got {part.options!r}"
    required, optional = OPTION_KEYS[part.kind]
    unknown = sorted(set(part.opts) - {*required, *optional})
    if unknown:
        return f"unknown option(s) {unknown} for kind {part.kind}; valid: {', '.join(required + optional) or 'none'}"
    for key, value in part.options:
        check, want = OPTION_RULES["sanity methods" if (part.kind, key) == ("sanity", "methods") else key]
        if not (_finite(value) and check(value)):
            return f"options.{key} must be {want}, got {value!r}"
    if part.alpha_from is None and uses_chosen_alpha(part):
        return f"kind {part.kind} uses the chosen alpha: name the val alpha sweep it takes it from in alpha_from"
    return None


def known_model(name: str) -> bool:
    """A model name :func:`helpers.cam.models.load_model` knows (checked without loading it)."""
    from ..cam.models import MODEL_NAMES
    from ..cam.zoo import TIMM_PREFIX, torchvision_names
    return name in MODEL_NAMES or name.startswith(TIMM_PREFIX) or name in torchvision_names()


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
        problem = part_problem(self)
        if problem:
            raise ValueError(f"part {self.name!r}: {problem}")

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
        protocol = {"rise_steps": self.rise_steps, "thesis_steps": self.thesis_steps, "seed": self.seed}
        bad = next((k for k, v in protocol.items() if not _whole(v, 0 if k == "seed" else 1)), None)
        if bad:
            raise ValueError(f"study {self.name!r}: {bad} must be a whole number >= {0 if bad == 'seed' else 1}, "
                             f"got {protocol[bad]!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"study {self.name!r}: description must be text, got {self.description!r}")
        if not (isinstance(self.parts, tuple) and self.parts and all(isinstance(p, Part) for p in self.parts)):
            raise ValueError(f"study {self.name!r}: no parts; a study needs at least one part ([[parts]] table)")
        names = [p.name for p in self.parts]
        folded = [n.lower() for n in names]   # each is a file name: Main and main clash on case-insensitive disks
        duplicated = sorted({n for n in names if folded.count(n.lower()) > 1})
        if duplicated:
            raise ValueError(f"study {self.name!r}: part names must be unique, ignoring case, repeated: {duplicated}")
        for p in self.parts:
            if p.alpha_from is not None:
                src = self.part(p.alpha_from) if p.alpha_from in names else None
                if src is None or src.stage != "val" or src.kind != "alpha_sweep":
                    raise ValueError(f"part {p.name!r}: alpha_from {p.alpha_from!r} is not a val alpha sweep "
                                     "of this study")
                lacking = [s for s in p.opts.get("settings", ()) if s not in src.opts["settings"]]
                if p.kind == "layers" and lacking:
                    raise ValueError(f"part {p.name!r}: settings {lacking} have no chosen alpha in {src.name!r} "
                                     f"(its settings: {list(src.opts['settings'])})")

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

    def check_selection(self, parts: Sequence[str] | None, stage: str | None = None) -> None:
        """A ValueError unless every name in ``parts`` (None: all) is a part of this study and, with a
        ``stage``, at least one of them is in that stage (otherwise nothing would run)."""
        if parts is None:
            return
        names = [p.name for p in self.parts]
        unknown = [p for p in parts if p not in names]
        if not parts or unknown:
            raise ValueError(f"{'unknown part(s) ' + str(unknown) if parts else 'no part named'}; parts of "
                             f"{self.name!r}: {', '.join(names)}")
        if stage is not None and not any(self.part(p).stage == stage for p in parts):
            raise ValueError(f"none of the parts {list(parts)} is in the {stage} stage; its parts: "
                             f"{', '.join(p.name for p in self.stage(stage))}")


def _sweep(name: str, model: str, n: int | None, settings: tuple, batch: int = 4, stage: str = "val",
           **options: Any) -> Part:
    """An alpha-sweep part; ``options`` override the sweep's defaults (every alpha of :data:`ALPHAS`, no additive
    fusion, no max fusion, both modes), always stored in the same order (the order is part of the hash)."""
    o = {"alphas": ALPHAS, "additive": (), "with_max": False, "modes": ("insertion", "deletion"), **options}
    return Part(name, "alpha_sweep", stage, model, n, batch, options=(
        ("settings", settings), ("alphas", tuple(o["alphas"])), ("additive", tuple(o["additive"])),
        ("with_max", o["with_max"]), ("modes", tuple(o["modes"]))))


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
        Part("methods_2", "evaluate", "test", "efficientnet_lite0", n_test, 1, None, (("methods", METHODS_2),)),
        Part("layers", "layers", "test", "efficientnet_lite0", n_test, batch, "alpha_layers",
             (("settings", LITE0_LAYER_SETTINGS),)),
        *[Part(m[-5:], "model", "test", m, n_test, batch, f"alpha_{m[-5:]}") for m in models],
        Part("sanity", "sanity", "test", "efficientnet_lite0", n_sanity, batch, "alpha_head",
             (("methods", ("gradcam", "layercam", "hybrid")),)),
        # the hybrid the thesis proposes (a = 0.7) on the same photos: its own part, so ``sanity`` keeps its hash
        Part("sanity_h07", "sanity", "test", "efficientnet_lite0", n_sanity, batch, None,
             (("methods", (f"hybrid@{THESIS_ALPHA}",)),)),
        # adaptive a: the per-image upper bound (every grid alpha's insertion AUC on every test photo; the
        # hybrid at a predicted alpha is read from these rows) and the predictor's features on val and test
        _sweep("oracle", "efficientnet_lite0", n_test, ("head",), batch=batch, stage="test", modes=("insertion",)),
        Part("features_val", "features", "val", "efficientnet_lite0", n_val, batch),
        Part("features_test", "features", "test", "efficientnet_lite0", n_test, batch),
        # ROAD (its own parts, so adding it invalidated nothing): the thesis methods and floors, and the six
        # further methods (on the first n_road_extra photos; all of them in the full design, at ~0.6 s per map here)
        Part("road", "road", "test", "efficientnet_lite0", n_test, 1, "alpha_head",
             (("methods", tuple(m for m in MAIN_METHODS if m[0] in CORE_LABELS)),)),
        Part("road_extra", "road", "test", "efficientnet_lite0", n_road_extra, 1, "alpha_head",
             (("methods", tuple(m for m in MAIN_METHODS if m[0] not in CORE_LABELS)),)),
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
    """A :class:`StudySpec` from a parsed TOML table: top-level protocol keys and ``[[parts]]`` tables.

    Checked as data before anything runs (a ValueError naming the key): the fields' types and ranges
    (:func:`part_problem`), and, as the code's own definitions need not, that each part names a known
    model and every option its kind requires."""
    known = {f.name for f in dataclasses.fields(StudySpec)} - {"parts", "name"}
    unknown = set(data) - known - {"parts"}
    if unknown:
        raise ValueError(f"study {name!r}: unknown key(s) {sorted(unknown)}; valid: parts, {', '.join(sorted(known))}")
    tables = data.get("parts", [])
    if not (isinstance(tables, list) and all(isinstance(t, dict) for t in tables)):
        raise ValueError(f"study {name!r}: parts must be [[parts]] tables, got {tables!r}")
    fields = dataclasses.fields(Part)
    parts = []
    for i, table in enumerate(tables):
        bad = set(table) - {f.name for f in fields}
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in table]
        if bad or missing or not isinstance(table.get("options", {}), dict):
            problem = (f"unknown key(s) {sorted(bad)}; valid: {', '.join(sorted(f.name for f in fields))}" if bad else
                       f"missing key(s) {', '.join(missing)}" if missing else
                       f"options must be a table ([parts.options]), got {table['options']!r}")
            raise ValueError(f"study {name!r}, part {i + 1}: {problem}")
        part = Part(**{**table, "options": _tuples(table.get("options", {}))})
        lacking = [k for k in OPTION_KEYS[part.kind][0] if k not in part.opts]
        if lacking:
            raise ValueError(f"part {part.name!r}: options.{lacking[0]} missing (kind {part.kind} needs "
                             f"{', '.join(OPTION_KEYS[part.kind][0])})")
        if not known_model(part.model):
            raise ValueError(f"part {part.name!r}: unknown model {part.model!r} (efficientnet_lite0/1/2, a "
                             "torchvision classifier or timm/<name>)")
        parts.append(part)
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
    try:
        return spec_from_mapping(data, path.stem)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
