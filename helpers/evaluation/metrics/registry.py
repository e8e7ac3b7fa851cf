"""The metric registry: each metric states its name, family, direction, needs and paper, beside its function.

A metric is a function ``f(bundle, images, maps, class_idx, options) -> (N,)`` (localisation ones also take
the ``masks`` (N, H, W) booleans) registered with ``@metric(name, Options, family=..., direction=...,
reference=..., needs=...)``, as the CAM methods are with ``@register`` (:mod:`helpers.cam.registry`);
``Options`` is the metric's frozen option class. :data:`METRICS` maps each name to its :class:`Metric`,
called as ``METRICS[name](bundle, images, maps, class_idx, masks=..., **options)`` -> (N,).

Conventions shared by the metrics of :mod:`.map_complexity`, :mod:`.region`, :mod:`.randomisation`,
:mod:`.faithfulness` and :mod:`.robustness`: options keep Quantus 0.6.0's names and defaults (``abs``,
``normalise``, ``nr_runs``, ``subset_size``, ...); ``normalise`` divides each map by its own maximum
|value| (:func:`attributions`), where Quantus divides the whole batch by the batch's maximum, so that a
photo's score never depends on the photos batched with it (the two agree whenever every map peaks at
1, as every map of the package does).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch

MetricFn = Callable[..., torch.Tensor]
#: The families of Quantus (Hedström et al., JMLR 2023) that the registry covers.
FAMILIES: tuple[str, ...] = ("faithfulness", "robustness", "localisation", "complexity", "randomisation")
#: Which way is better.
DIRECTIONS: tuple[str, ...] = ("higher", "lower")
#: What a metric may need beyond the maps: the model's forwards, the object masks, re-explaining inputs.
NEEDS = frozenset({"model", "masks", "explain"})


@dataclass(frozen=True)
class MapOptions:
    """What every metric's options hold: ``abs`` (take |map|) and ``normalise`` (divide by the map's max)."""

    abs: bool = False
    normalise: bool = True


@dataclass(frozen=True)
class Metric:
    """One metric: its ``name``, ``family``, ``direction`` ("higher" or "lower" is better), ``needs`` (a subset
    of :data:`NEEDS`), the paper it comes from (``reference``), its option class and the function computing it."""

    name: str
    family: str
    direction: str
    needs: frozenset[str]
    reference: str
    options: type[MapOptions]
    fn: MetricFn

    def __call__(self, bundle, images: torch.Tensor, maps: torch.Tensor, class_idx,
                 masks: torch.Tensor | None = None, **options) -> torch.Tensor:
        """The metric's value per image, (N,), under ``options`` (the option class' fields, by name)."""
        unknown = sorted(set(options) - {f.name for f in fields(self.options)})
        if unknown:
            raise ValueError(f"{self.name} has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(f.name for f in fields(self.options))}")
        opts = self.options(**options)
        if "masks" not in self.needs:
            return self.fn(bundle, images, maps, class_idx, opts)
        if masks is None:
            raise ValueError(f"{self.name} needs masks= (N, H, W) booleans: the pixels of the explained object")
        return self.fn(bundle, images, maps, class_idx, opts, masks)


#: Every registered metric by name.
METRICS: dict[str, Metric] = {}


def metric(name: str, options: type[MapOptions] = MapOptions, *, family: str, direction: str, reference: str,
           needs: tuple[str, ...] = ()) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding a metric function to :data:`METRICS` under ``name``, with its option class and the
    facts it states."""
    if family not in FAMILIES:
        raise ValueError(f"unknown metric family {family!r}; valid: {', '.join(FAMILIES)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not set(needs) <= NEEDS:
        raise ValueError(f"unknown needs {sorted(set(needs) - NEEDS)}; valid: {', '.join(sorted(NEEDS))}")

    def add(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, family, direction, frozenset(needs), reference, options, fn)
        return fn
    return add


def attributions(maps: torch.Tensor, options: MapOptions) -> torch.Tensor:
    """Maps (N, H, W) as the metrics read them, float64: each divided by its maximum |value| when
    ``options.normalise`` (an all-zero map stays zero), then made non-negative when ``options.abs`` (Quantus' order)."""
    a = maps.detach().double().cpu()
    if options.normalise:
        peak = a.flatten(1).abs().amax(dim=1).view(-1, *[1] * (a.dim() - 1))
        a = a / torch.where(peak > 0, peak, 1.0)
    return a.abs() if options.abs else a
