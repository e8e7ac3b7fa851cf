"""The CAM method registry: a name maps to its function and option class, and a request becomes a plan.

A method is a pure function ``f(acts, grads, ..., **options) -> raw map`` registered with
``@register(name)`` (or ``@register(name, OptionClass)`` when it has options,
:mod:`helpers.cam.options`). :func:`plan` turns what a caller asks for -- names, option objects,
``Smooth(...)`` -- into one step per map with the key the result carries: the method's name; when
one call asks for the same method with different options, ``name@<the values that differ>``
(``Hybrid(0.5)`` and ``Hybrid(0.7)`` give ``"hybrid@0.5"`` and ``"hybrid@0.7"``). Equal requests run once.
A method marked ``@shared`` (Grad-CAM, LayerCAM) runs once per pass for the same inputs, so a method built on
it (the hybrid) reuses its map.
"""
from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch

from .options import MethodOptions, Smooth

CamMethod = Callable[..., torch.Tensor]
#: What ``methods=`` takes per method: a registered name (defaults), its option object, or ``Smooth(...)``.
Method = Union[str, MethodOptions, Smooth]
METHODS: dict[str, CamMethod] = {}
#: The option class of each registered method that has options.
OPTIONS: dict[str, type[MethodOptions]] = {}
SMOOTH_PREFIX = "smooth-"
#: Inputs the engine supplies to a method that names them as parameters (the option object's fields
#: are passed the same way): ``acts``/``grads`` (N, K, h, w) of the layer;
#: ``classes`` (N,) explained classes; ``images`` the input batch on the model's device;
#: ``model`` the network; ``forward`` its gradient-free forward, images -> logits, on the
#: inference backend (:func:`helpers.cam.backend.infer`); ``tail`` the network after the layer
#: (feature map -> logits, :func:`helpers.cam.split.split_at`); ``head_weight`` (N, K) the linear
#: classifier's weights of the explained classes (only where global average pooling + linear follow the layer directly);
#: ``score`` the explained target as a differentiable function of the logits, (N, C) -> (N,).
INPUTS: tuple[str, ...] = ("acts", "grads", "classes", "images", "model", "forward", "tail", "head_weight", "score")
#: Inputs that only a class target gives (a callable target explains no class).
CLASS_INPUTS = frozenset({"classes", "head_weight"})


def register(name: str, options: type[MethodOptions] | None = None) -> Callable[[CamMethod], CamMethod]:
    """Decorator adding a method to :data:`METHODS` under ``name``, with its option class if it has options."""
    if options is not None and options.name != name:
        raise ValueError(f"option class {options.__name__} is for method {options.name!r}, not {name!r}")

    def add(fn: CamMethod) -> CamMethod:
        METHODS[name] = fn
        if options is not None:
            OPTIONS[name] = options
        return fn
    return add


def method_inputs(fn: CamMethod) -> list[str]:
    """The engine inputs (see :data:`INPUTS`) a method asks for, in its parameter order."""
    return [p for p in inspect.signature(fn).parameters if p in INPUTS]


def gradient_methods() -> list[str]:
    """Registered methods that are pure functions of (activations, gradients): the ones SmoothGrad can wrap."""
    return [name for name, fn in METHODS.items() if method_inputs(fn) == ["acts", "grads"]]


@dataclass(frozen=True)
class Step:
    """One map to compute: result ``key``, registered ``name``, its function, options and SmoothGrad (or None)."""

    key: str
    name: str
    fn: CamMethod
    options: Mapping[str, Any]
    smooth: Smooth | None = None

    @property
    def needs(self) -> set[str]:
        """The engine inputs the method asks for."""
        return set(method_inputs(self.fn))


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown CAM method {name!r}; valid methods: {', '.join(METHODS)} "
                      f"(and {SMOOTH_PREFIX}<m> for m in {', '.join(gradient_methods())})")


def _resolve(method: Method) -> Step:
    """One method request as a :class:`Step` keyed by its name; a clear error for unknown or misused ones."""
    if isinstance(method, str):
        if method.startswith(SMOOTH_PREFIX) and method not in METHODS:
            if method[len(SMOOTH_PREFIX):] not in METHODS:
                raise _unknown(method)
            return _resolve(Smooth(method[len(SMOOTH_PREFIX):]))
        if method not in METHODS:
            raise _unknown(method)
        return _resolve(OPTIONS[method]()) if method in OPTIONS else Step(method, method, METHODS[method], {})
    if isinstance(method, Smooth):
        inner = _resolve(method.method)
        if inner.smooth is not None or inner.name not in gradient_methods():
            raise ValueError(f"{method.name!r}: SmoothGrad wraps gradient methods only "
                             f"({', '.join(gradient_methods())})")
        return Step(method.name, inner.name, inner.fn, inner.options, method)
    if isinstance(method, MethodOptions):
        if OPTIONS.get(method.name) is not type(method):
            raise ValueError(f"{type(method).__name__} is not the option class of a registered method")
        return Step(method.name, method.name, METHODS[method.name], method.options())
    raise TypeError(f"a CAM method is a name, an option object (e.g. Hybrid(alpha=0.5)) or Smooth(...); "
                    f"got {type(method).__name__} {method!r}")


def _values(step: Step) -> dict[str, Any]:
    smooth = {} if step.smooth is None else {"n": step.smooth.n, "noise": step.smooth.noise, "seed": step.smooth.seed}
    return {**step.options, **smooth}


def plan(methods: Method | Sequence[Method]) -> list[Step]:
    """The steps of a ``methods=`` request in its order (one name or object, or a sequence of them):
    equal requests once; methods asked for with different options keyed ``name@<values that differ>``."""
    items = [methods] if isinstance(methods, (str, MethodOptions, Smooth)) else list(methods)
    if not items:
        raise ValueError(f"methods is empty: give at least one CAM method (valid: {', '.join(METHODS)})")
    steps = list({(s.key, tuple(_values(s).items())): s for s in map(_resolve, items)}.values())
    out = []
    for step in steps:
        group = [_values(s) for s in steps if s.key == step.key]
        if len(group) > 1:
            mine = _values(step)
            differ = [f for f in mine if any(g[f] != mine[f] for g in group)]
            step = Step(f"{step.key}@{','.join(str(mine[f]) for f in differ)}", step.name, step.fn, step.options,
                        step.smooth)
        out.append(step)
    return out


def method_options(name: str, options: Mapping[str, Any]) -> Method:
    """The method ``name`` configured with those of ``options`` its option class has (the others are
    ignored, so one settings dict can serve several methods); a method without options stays its name."""
    step = _resolve(name)

    def pick(cls: type) -> dict[str, Any]:
        return {f.name: options[f.name] for f in fields(cls) if f.name in options and f.name != "method"}

    inner: Method = OPTIONS[step.name](**pick(OPTIONS[step.name])) if step.name in OPTIONS else step.name
    return inner if step.smooth is None else Smooth(inner, **pick(Smooth))


PureMethod = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: The raw maps of :func:`shared` methods in the pass under way (None outside a pass): {key: (inputs, map)}.
_PASS_MAPS: ContextVar[dict | None] = ContextVar("pass_maps", default=None)


def shared(fn: PureMethod) -> PureMethod:
    """A pure method ``fn(acts, grads)`` that, inside one engine pass, runs once per (acts, grads) pair and
    hands the same map to every caller (the hybrid reuses Grad-CAM's and LayerCAM's); outside a pass it just runs."""
    @functools.wraps(fn)
    def once(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        memo = _PASS_MAPS.get()
        if memo is None:
            return fn(acts, grads)
        key = (fn, id(acts), id(grads))
        if key not in memo:  # the inputs are kept with the map, so their ids are not reused during the pass
            memo[key] = ((acts, grads), fn(acts, grads))
        return memo[key][1]
    return once


@contextmanager
def one_pass() -> Iterator[None]:
    """Inside the block (the engine's pass, :func:`helpers.cam.engine.compute_cams`) :func:`shared` methods
    hand out their maps again; the maps are dropped at its end."""
    token = _PASS_MAPS.set({})
    try:
        yield
    finally:
        _PASS_MAPS.reset(token)
