"""The CAM engine: one forward and one backward per batch, every method from the same tensors.

A CAM method is a small pure function ``f(activations, gradients, **options) -> map``: the
activations ``A`` and gradients ``dy/dA`` of one layer, shaped (N, K, h, w), give a raw,
non-negative map (N, h, w). Registering a method is one function and one ``@register`` line.
:func:`compute_cams` runs the network once, takes gradients with ``torch.autograd.grad`` with
respect to the hooked maps only, applies every requested method, upsamples bilinearly to the
input size and scales each map to [0, 1] by its maximum.

What is explained is a target (:mod:`helpers.cam.targets`): the top-1 class, given classes, a
class's probability, or any callable score of the logits. A method's options travel in its option
object (:mod:`helpers.cam.options`, e.g. ``Hybrid(alpha=0.5)``); the registry
(:mod:`helpers.cam.registry`) maps a name to the function and the option class.
Methods that need more than (activations, gradients) say so by their parameter names and the
engine supplies those inputs (see :data:`helpers.cam.registry.INPUTS`): CAM asks for
``head_weight``, Score-CAM for ``images``/``classes``/``forward``, Recipro-CAM for ``tail``. Only
when some requested method asks for ``grads`` does the pass take a backward; all gradient methods
share that one pass. Below the hooked layer nothing needs autograd, so where the layer is followed by pooling + a linear
classifier that part of the network runs on the inference backend (:mod:`helpers.cam.backend`,
:func:`engine_split`) and only the rest in PyTorch.
``Smooth(method)`` (or ``"smooth-<method>"``) wraps any gradient method in SmoothGrad
(:func:`noisy_copies`); the noisy copies ride in the same single pass. A model in train mode runs
in eval mode for the call and is given back in its own modes (:func:`helpers.cam.hooks.eval_mode`).
The further methods live in :mod:`helpers.cam.methods`.
"""
from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SEED
from .backend import forward_fn, infer, resolve_backend
from .bundle import ModelBundle
from .checks import check_class_idx, check_images
from .hooks import LayerCapture, eval_mode
from .layers import Reshape, as_map
from .maps import fuse_layers, geometric_fusion, scale_maps
from .models import ensure_bundle
from .options import (
    DEFAULT_FUSION,
    FORWARD_BATCH,
    SCORECAM_TOP_K,
    Hybrid,
    LayerFusion,
    MethodOptions,
    ReciproCAM,
    ScoreCAM,
    Smooth,
)
from .registry import (
    CLASS_INPUTS,
    INPUTS,
    METHODS,
    OPTIONS,
    SMOOTH_PREFIX,
    CamMethod,
    Method,
    Step,
    gradient_methods,
    method_inputs,
    method_options,
    one_pass,
    plan,
    register,
    shared,
)
from .registry import _resolve as _resolve  # noqa: F401  (re-exported: the command line checks names with it)
from .split import GapLinearHead, ModelSplit, split_at
from .targets import ClassLogit, ClassLogProbability, ClassProbability, ClassTarget, Target, as_target, class_target

__all__ = ["CLASS_INPUTS", "FORWARD_BATCH", "INPUTS", "METHODS", "OPTIONS", "SCORECAM_TOP_K", "SMOOTH_PREFIX",
           "CamMaps", "CamMethod", "Capture", "ClassLogProbability", "ClassLogit", "ClassProbability", "ClassTarget",
           "Hybrid", "LayerFusion", "Method", "MethodOptions", "ReciproCAM", "ScoreCAM", "Smooth", "Step", "Target",
           "as_target", "callable_scores", "capture", "class_target", "classifier_rows", "compute_cams", "engine_split",
           "forward_backward", "gradcam", "gradcam_weights", "gradient_methods", "hybrid", "layer_list", "layercam",
           "method_inputs", "method_options", "noisy_copies", "one_pass", "plan", "register", "shared"]


@register("gradcam")
@shared
def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A^k), alpha_k = mean_ij dy/dA^k_ij."""
    return F.relu((gradcam_weights(grads)[..., None, None] * acts).sum(dim=1))


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights alpha_k^c: the spatial mean of the gradients, shape (N, K)."""
    return grads.mean(dim=(2, 3))


@register("layercam")
@shared
def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(dy/dA^k) * A^k), weights per element."""
    return F.relu(F.relu(grads).mul_(acts).sum(dim=1))


@register("hybrid", Hybrid)
def hybrid(acts: torch.Tensor, grads: torch.Tensor, alpha: float = 0.7) -> torch.Tensor:
    """The thesis' hybrid: norm(Grad-CAM)^alpha * norm(LayerCAM)^(1-alpha), at the layer's resolution."""
    return geometric_fusion(gradcam(acts, grads), layercam(acts, grads), alpha)


@dataclass
class Capture:
    """What one forward + backward gives: logits, the explained classes (None for a callable target),
    maps and their gradients."""

    logits: torch.Tensor
    class_idx: torch.Tensor | None
    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    layers: list[str]


def forward_backward(bundle: ModelBundle, images: torch.Tensor, class_idx: Target = None,
                     layers: str | Sequence[str] | None = None, score: str = "logit") -> Capture:
    """One forward and one backward: activations of ``layers`` and d score / d activations.

    ``class_idx``: None (each image's predicted class), class indices, or any target of
    :func:`compute_cams`; for indices ``score`` is the pre-softmax class score ``"logit"`` (the CAM
    papers' y^c), the softmax ``"probability"`` or ``"log-probability"``. ``layers`` lists the
    layers in forward order in the result (default: the bundle's target layer). A model in train
    mode runs in eval mode and is restored, with a warning (as :func:`compute_cams`).
    """
    check_images(images, bundle)
    target = as_target(class_idx, score)
    with eval_mode(bundle.model):
        return capture(bundle, images, target, layers, backward=True)


def layer_list(layer: str | Sequence[str] | None) -> list[str] | None:
    """``layer`` as a list of names (None stays None); an empty list or a non-name is a clear error."""
    if layer is None:
        return None
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise ValueError("layer is empty: give a layer name, several (multi-layer fusion), or None (the default layer)")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"layer names must be strings, got {bad[0]!r} ({type(bad[0]).__name__})")
    return names


#: Per model: {layer: its split, or None when it cannot be split}; built once, the modules are shared.
_SPLITS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, ModelSplit | None]]" = weakref.WeakKeyDictionary()


def engine_split(bundle: ModelBundle, names: Sequence[str]) -> ModelSplit | None:
    """The model cut after the one hooked layer when the part before it runs on the inference engine
    (:mod:`helpers.cam.backend`), else None: the whole pass runs in PyTorch.

    Only a layer followed directly by global average pooling + a linear classifier (the default
    layers) qualifies: through a deeper tail, the engine's float-noise differences (~1e-6) flip
    ReLU6 kinks in the backward and moved shallow maps by up to 0.1 (measured), so several
    layers, other layers, the torch backend, train mode and models without a split keep
    today's pass.
    """
    layers = set(names)
    if len(layers) != 1 or not layers <= set(bundle.layers) or bundle.model.training \
            or resolve_backend(bundle.backend, bundle.device) == "torch":
        return None
    layer = names[0]
    splits = _SPLITS.setdefault(bundle.model, {})
    if layer not in splits:
        try:
            split = split_at(bundle, layer)
        except ValueError:
            split = None
        if split is not None and isinstance(split.tail, GapLinearHead):
            split.features.eval()  # a new container is in train mode; its modules are not
            splits[layer] = split
        else:
            splits[layer] = None
    return splits[layer]


def capture(bundle: ModelBundle, images: torch.Tensor, target: Target = None,
            layers: str | Sequence[str] | None = None, backward: bool = True,
            explained: int | None = None) -> Capture:
    """One forward (and, if ``backward``, one backward) recording ``layers``; see :func:`forward_backward`.

    With ``explained=n`` only the first n images choose the classes (a class target has n entries,
    or None: their predictions); the rest of the batch are copies of them in blocks of n (e.g.
    SmoothGrad's noisy copies) and explain the same classes. Without ``backward`` nothing is
    recorded for autograd and ``gradients`` is empty.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be a batch (N, 3, H, W), got shape {tuple(images.shape)}")
    target = as_target(target)
    n = len(images) if explained is None else explained
    given = target.class_idx if isinstance(target, ClassTarget) else None
    given = None if given is None else check_class_idx(given, n, len(bundle.class_names))  # before any forward
    names = layer_list(layers) or [bundle.target_layer]
    images = images.to(bundle.device)
    split = engine_split(bundle, names)
    if split is not None:  # below the first hooked layer nothing needs autograd: that part runs on the engine
        below = forward_fn(split.features, bundle.device, name=f"{bundle.name}-to-{split.layer}",
                           backend=bundle.backend, precision=bundle.precision)(images)
    with torch.enable_grad() if backward else torch.no_grad(), LayerCapture(bundle.model, names, bundle.layers) as cap:
        # The split's tail (pooling + linear) changes nothing in place, so it runs on the recorded map itself.
        logits = bundle.model(images) if split is None else split.tail(cap.feed(split.layer, below, copy=False))
        idx = None
        if isinstance(target, ClassTarget):
            idx = logits[:n].argmax(dim=1).cpu() if given is None else given
            idx = idx.repeat(len(images) // n).to(logits.device)
        if backward:
            grads = cap.gradients(target.select(logits, idx) if idx is not None else callable_scores(target, logits))
        else:
            cap.check_captured()
        order = [name for name in cap.activations if name in names]  # dict order = firing order
        # Tokens / channels-last outputs -> (N, C, h, w); the same rearrangement of the gradients
        # is exactly the gradient of the rearranged map (entries are only moved or dropped).
        to_map = bundle.reshape or (lambda t: as_map(t, images.shape[-2:], bundle.patch_size))
        acts = {name: to_map(cap.activations[name].detach()) for name in order}
        grads = {name: to_map(grads[name].detach()) for name in order} if backward else {}
    return Capture(logits.detach(), None if idx is None else idx.cpu(), acts, grads, order)


def callable_scores(target: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """``target(logits)``, checked to be one differentiable score per image, shape (N,)."""
    scores = target(logits)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(logits),):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"a callable target must map the logits {tuple(logits.shape)} to one score per image, "
                         f"shape ({len(logits)},); got {got}")
    if not scores.requires_grad:
        raise ValueError("the callable target's scores do not depend on the logits (no gradient to explain)")
    return scores


class CamMaps(dict):
    """``{key: (N, H, W) map in [0, 1]}`` (keys: see :func:`helpers.cam.registry.plan`), plus
    ``class_idx`` (None for a callable target) and ``logits`` of the pass."""

    class_idx: torch.Tensor | None
    logits: torch.Tensor


def classifier_rows(bundle: ModelBundle, layer: str, classes: torch.Tensor) -> torch.Tensor:
    """(N, K) weights of the explained classes in a linear classifier that directly follows GAP after ``layer``."""
    try:
        tail = split_at(bundle, layer).tail
    except ValueError as err:
        raise ValueError(f"CAM needs the classifier weights after layer {layer!r}: {err}") from None
    if not isinstance(tail, GapLinearHead):
        raise ValueError(f"CAM needs global average pooling + a linear classifier right after the CAM layer; "
                         f"layer {layer!r} of {bundle.name} is followed by more layers "
                         f"(use the last feature layer, {bundle.target_layer!r})")
    return tail.linear.weight.detach()[classes.to(tail.linear.weight.device)]


def noisy_copies(images: torch.Tensor, n: int, noise: float, seed: int = SEED) -> torch.Tensor:
    """SmoothGrad's inputs (Smilkov et al. 2017): n copies x + N(0, sigma^2), sigma = noise * (max x - min x).

    Returned as n blocks of the batch (copy j of image i at row j * N + i); seeded, so the same
    call gives the same noise.
    """
    if n < 1 or noise < 0:
        raise ValueError(f"SmoothGrad needs n >= 1 and noise >= 0, got {n} and {noise}")
    sigma = noise * (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(-1, 1, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, *images.shape), generator=gen).to(images)
    return (images[None] + sigma[None] * eps).flatten(0, 1)


def _call(name: str, fn: CamMethod, inputs: Mapping[str, Callable[[], object]], options: Mapping[str, object]):
    """Call ``fn`` with the engine inputs and options its parameters name."""
    kwargs = {}
    for p, param in inspect.signature(fn).parameters.items():
        if p in inputs:
            kwargs[p] = inputs[p]()
        elif p in options:
            kwargs[p] = options[p]
        elif param.default is inspect.Parameter.empty:
            raise TypeError(f"method {name!r} needs {p!r}, which the engine cannot supply "
                            f"(inputs: {', '.join(INPUTS)})")
    return fn(**kwargs)


def _inputs(bundle: ModelBundle, images: torch.Tensor, cap: Capture, layer: str,
            rows: slice, target: Target = None) -> dict[str, Callable[[], object]]:
    """Lazy engine inputs for one layer and the batch rows ``rows`` of the pass, each made once (every
    step gets the same tensors, so :func:`shared` methods recognise them)."""
    makers = {"acts": lambda: cap.activations[layer][rows], "grads": lambda: cap.gradients[layer][rows],
            "classes": lambda: cap.class_idx[rows], "images": lambda: images, "model": lambda: bundle.model,
            "forward": lambda: lambda x: infer(bundle, x),
            "tail": lambda: split_at(bundle, layer).tail,
            "head_weight": lambda: classifier_rows(bundle, layer, cap.class_idx[rows]),
            "score": lambda: _score_fn(target, cap.class_idx[rows] if cap.class_idx is not None else None)}
    return {name: functools.cache(make) for name, make in makers.items()}


def _score_fn(target: Target, classes: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The explained score of logits (N, C) -> (N,): the class target's score of ``classes``, or the callable."""
    if isinstance(target, ClassTarget):
        return lambda logits: target.select(logits, classes.to(logits.device))[:, 0]
    return lambda logits: callable_scores(target, logits)


def compute_cams(bundle: ModelBundle | nn.Module, images: torch.Tensor,
                 methods: Method | Sequence[Method] = ("gradcam", "layercam", "hybrid"), target: Target = None,
                 layer: str | Sequence[str] | None = None, *, fusion: LayerFusion = DEFAULT_FUSION,
                 reshape: Reshape | None = None) -> CamMaps:
    """CAMs of a preprocessed batch (N, 3, H, W) for every method, from ONE forward and at most ONE backward.

    ``bundle`` is a :class:`ModelBundle` or any classifier ``nn.Module`` (wrapped once by
    :func:`helpers.cam.models.as_bundle`: without ``layer`` the last spatial map is used).
    ``methods``: one method or several, each a registered name (its default options), an option
    object (``Hybrid(alpha=0.5)``, ``ScoreCAM(top_k=8)``, ``ReciproCAM(kernel="gaussian")``) or
    ``Smooth(method, n, noise, seed)`` (``"smooth-<m>"`` = ``Smooth("<m>")``).
    ``target``: None (each image's top-1 class), a class index or one per image (their logit), a
    class target (``ClassLogit``, ``ClassProbability``, ``ClassLogProbability``, or
    ``class_target(idx, score)``), or a callable ``logits (N, C) -> (N,)`` such as
    ``lambda y: y[:, 3] + y[:, 7]``; methods that need a class (CAM, Score-CAM, Recipro-CAM) refuse a callable.
    ``layer``: one layer name or several (multi-layer fusion, :func:`fuse_layers` with ``fusion.gamma``);
    default the bundle's target layer. ``reshape`` turns the layer's output into (N, C, h, w)
    (default: tokens and channels-last maps are handled by :func:`helpers.cam.layers.as_map`).

    Returns a :class:`CamMaps` ``{key: (N, H, W)}`` of float maps in [0, 1], bilinearly upsampled to
    the input size, keyed by method name; the same method asked for with different options in one
    call is keyed ``name@<the option values that differ>`` (e.g. ``"hybrid@0.5"``, ``"hybrid@0.7"``).
    ``.class_idx`` holds the explained classes (None for a callable target), ``.logits`` the logits.

    The model is never changed: one in train mode (any module) runs in eval mode for the call, with
    one warning, and gets its modes back; parameters and buffers are untouched. Bad input is a
    ValueError before any forward: the batch (:func:`helpers.cam.checks.check_images`, which also
    refuses a dtype other than the weights', e.g. float64: convert with ``images.float()``), no
    methods, unknown methods or options, class indices that are not integers, an empty ``layer``.
    """
    check_images(images, bundle)
    steps = plan(methods)
    target = as_target(target)
    if not isinstance(target, ClassTarget):
        needy = [s.key for s in steps if s.needs & CLASS_INPUTS]
        if needy:
            raise ValueError(f"{', '.join(needy)} explain a class, and a callable target has none: give a class "
                             f"index or a class target (ClassLogit, ClassProbability, ClassLogProbability)")
    layers = layer_list(layer)
    if not isinstance(fusion, LayerFusion):
        raise TypeError(f"fusion must be a LayerFusion(gamma=...), got {type(fusion).__name__}")
    with eval_mode(bundle if isinstance(bundle, nn.Module) else bundle.model):
        bundle = ensure_bundle(bundle, images.shape[-2:], layer, reshape)
        if any("tail" in s.needs for s in steps):  # no split for this model: say so before any forward
            for lay in layers or [bundle.target_layer]:
                split_at(bundle, lay)
        return _run(bundle, images, steps, target, layers, fusion)


def _run(bundle: ModelBundle, images: torch.Tensor, steps: Sequence[Step], target: Target,
         layers: list[str] | None, fusion: LayerFusion) -> CamMaps:
    """The one pass of :func:`compute_cams` and every step's map from it."""
    n = len(images)
    noise = list(dict.fromkeys((s.smooth.n, s.smooth.noise, s.smooth.seed) for s in steps if s.smooth is not None))
    batch = torch.cat([images, *(noisy_copies(images, *setting) for setting in noise)]) if noise else images
    starts = {setting: n * offset for setting, offset in zip(noise, accumulate((k for k, _, _ in noise), initial=1),
                                                               strict=False)}
    backward = any("grads" in s.needs for s in steps)
    cap = capture(bundle, batch, target, layers, backward=backward, explained=n)
    on_device = images.to(bundle.device)
    inputs: dict[tuple[str, int, int], dict[str, Callable[[], object]]] = {}
    raw: dict[str, list[torch.Tensor]] = {lay: [] for lay in cap.layers}  # per layer, one map per step
    with torch.no_grad(), one_pass():
        for step in steps:
            smooth = step.smooth
            start = 0 if smooth is None else starts[(smooth.n, smooth.noise, smooth.seed)]
            rows = slice(start, start + n * (1 if smooth is None else smooth.n))
            for lay in cap.layers:
                given = inputs.setdefault((lay, rows.start, rows.stop),
                                          _inputs(bundle, on_device, cap, lay, rows, target))
                m = _call(step.key, step.fn, given, step.options)
                raw[lay].append(m if smooth is None else m.view(smooth.n, n, *m.shape[1:]).mean(dim=0))
        scaled = [scale_maps(raw[lay], tuple(images.shape[-2:])) for lay in cap.layers]
    out = CamMaps()
    for step, per_layer in zip(steps, zip(*scaled, strict=True), strict=True):
        out[step.key] = per_layer[0] if len(per_layer) == 1 else fuse_layers(per_layer, fusion.gamma)
    out.class_idx, out.logits = None if cap.class_idx is None else cap.class_idx[:n], cap.logits[:n]
    return out

