"""The CAM engine: one forward and one backward per batch, every method from the same tensors.

A CAM method is a small pure function ``f(activations, gradients, **options) -> map``: the
activations ``A`` and gradients ``dy/dA`` of one layer, shaped (N, K, h, w), give a raw,
non-negative map (N, h, w). Registering a method is one function and one ``@register`` line.
:func:`compute_cams` runs the network once, takes gradients with ``torch.autograd.grad`` with
respect to the hooked maps only, applies every requested method, upsamples bilinearly to the
input size and scales each map to [0, 1] by its maximum.

Methods that need more than (activations, gradients) say so by their parameter names and the
engine supplies those inputs (see :data:`INPUTS`): CAM asks for ``head_weight``, Score-CAM for
``images``/``classes``/``forward``, Recipro-CAM for ``tail``. Only when some requested method asks
for ``grads`` does the pass take a backward; all gradient methods share that one pass. Below the
hooked layer nothing needs autograd, so where the layer is followed by pooling + a linear
classifier that part of the network runs on the inference backend (:mod:`helpers.cam.backend`,
:func:`engine_split`) and only the rest in PyTorch.
``"smooth-<method>"`` wraps any gradient method in SmoothGrad (:func:`noisy_copies`); the noisy
copies ride in the same single pass. The further methods live in :mod:`helpers.cam.methods`.
"""
from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..config import SEED
from torch import nn

from .backend import forward_fn, infer, resolve_backend
from .checks import check_images
from .hooks import LayerCapture
from .layers import Reshape, as_map
from .maps import fuse_layers, geometric_fusion, normalise_max, upsample
from .models import GapLinearHead, ModelBundle, ModelSplit, check_class_idx, ensure_bundle, split_at

CamMethod = Callable[..., torch.Tensor]
METHODS: dict[str, CamMethod] = {}


def register(name: str) -> Callable[[CamMethod], CamMethod]:
    """Decorator adding a method to :data:`METHODS` under ``name``."""
    def add(fn: CamMethod) -> CamMethod:
        METHODS[name] = fn
        return fn
    return add


@register("gradcam")
def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A^k), alpha_k = mean_ij dy/dA^k_ij."""
    return F.relu((gradcam_weights(grads)[..., None, None] * acts).sum(dim=1))


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights alpha_k^c: the spatial mean of the gradients, shape (N, K)."""
    return grads.mean(dim=(2, 3))


@register("layercam")
def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(dy/dA^k) * A^k), weights per element."""
    return F.relu((F.relu(grads) * acts).sum(dim=1))


@register("hybrid")
def hybrid(acts: torch.Tensor, grads: torch.Tensor, alpha: float = 0.7) -> torch.Tensor:
    """The thesis' hybrid: norm(Grad-CAM)^alpha * norm(LayerCAM)^(1-alpha), at the layer's resolution."""
    return geometric_fusion(gradcam(acts, grads), layercam(acts, grads), alpha)


@dataclass
class Capture:
    """What one forward + backward gives: logits, the explained classes, maps and their gradients."""

    logits: torch.Tensor
    class_idx: torch.Tensor
    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    layers: list[str]


def forward_backward(bundle: ModelBundle, images: torch.Tensor, class_idx: int | Sequence[int] | None = None,
                     layers: str | Sequence[str] | None = None, score: str = "logit") -> Capture:
    """One forward and one backward: activations of ``layers`` and d score / d activations.

    ``score`` is the pre-softmax class score ``"logit"`` (the CAM papers' y^c) or the softmax
    ``"probability"``. ``class_idx=None`` explains each image's predicted class. ``layers`` lists
    the layers in forward order in the result (default: the bundle's target layer).
    """
    check_images(images, bundle)
    return capture(bundle, images, class_idx, layers, score, backward=True)


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


def capture(bundle: ModelBundle, images: torch.Tensor, class_idx: int | Sequence[int] | None = None,
            layers: str | Sequence[str] | None = None, score: str = "logit", backward: bool = True,
            explained: int | None = None) -> Capture:
    """One forward (and, if ``backward``, one backward) recording ``layers``; see :func:`forward_backward`.

    With ``explained=n`` only the first n images choose the classes (``class_idx`` has n entries,
    or None: their predictions); the rest of the batch are copies of them in blocks of n (e.g.
    SmoothGrad's noisy copies) and explain the same classes. Without ``backward`` nothing is
    recorded for autograd and ``gradients`` is empty.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be a batch (N, 3, H, W), got shape {tuple(images.shape)}")
    if score not in ("logit", "probability"):
        raise ValueError(f"unknown score {score!r}; use 'logit' or 'probability'")
    n = len(images) if explained is None else explained
    names = [bundle.target_layer] if layers is None else [layers] if isinstance(layers, str) else list(layers)
    images = images.to(bundle.device)
    split = engine_split(bundle, names)
    if split is not None:  # below the first hooked layer nothing needs autograd: that part runs on the engine
        below = forward_fn(split.features, bundle.device, name=f"{bundle.name}-to-{split.layer}",
                           backend=bundle.backend, precision=bundle.precision)(images)
    with torch.enable_grad() if backward else torch.no_grad(), LayerCapture(bundle.model, names, bundle.layers) as cap:
        logits = bundle.model(images) if split is None else split.tail(cap.feed(split.layer, below))
        idx = logits[:n].argmax(dim=1).cpu() if class_idx is None else check_class_idx(class_idx, n, logits.shape[1])
        idx = idx.repeat(len(images) // n).to(logits.device)
        if backward:
            y = logits if score == "logit" else logits.softmax(dim=1)
            grads = cap.gradients(y.gather(1, idx[:, None]))
        else:
            cap.check_captured()
        order = [name for name in cap.activations if name in names]  # dict order = firing order
        # Tokens / channels-last outputs -> (N, C, h, w); the same rearrangement of the gradients
        # is exactly the gradient of the rearranged map (entries are only moved or dropped).
        to_map = bundle.reshape or (lambda t: as_map(t, images.shape[-2:], bundle.patch_size))
        acts = {name: to_map(cap.activations[name].detach()) for name in order}
        grads = {name: to_map(grads[name].detach()) for name in order} if backward else {}
    return Capture(logits.detach(), idx.cpu(), acts, grads, order)


class CamMaps(dict):
    """``{method: (N, H, W) map in [0, 1]}``, plus ``class_idx`` and ``logits`` of the pass."""

    class_idx: torch.Tensor
    logits: torch.Tensor


#: Inputs the engine supplies to a method that names them as parameters (options such as
#: ``alpha`` or ``top_k`` are passed the same way): ``acts``/``grads`` (N, K, h, w) of the layer;
#: ``classes`` (N,) explained classes; ``images`` the input batch on the model's device;
#: ``model`` the network; ``forward`` its gradient-free forward, images -> logits, on the
#: inference backend (:func:`helpers.cam.backend.infer`); ``tail`` the network after the layer
#: (feature map -> logits, :func:`helpers.models.split_at`); ``head_weight`` (N, K) the linear classifier's weights of the
#: explained classes (only where global average pooling + linear follow the layer directly).
INPUTS: tuple[str, ...] = ("acts", "grads", "classes", "images", "model", "forward", "tail", "head_weight")
SMOOTH_PREFIX = "smooth-"
#: Score-CAM's default number of channels (largest mean activation) that mask the input. All
#: 1280 channels of Lite0's head would cost 1280 forwards per image; see the README's methods
#: table for the measured cost of this default.
SCORECAM_TOP_K = 32
#: Default number of images per forward in Score-CAM and Recipro-CAM.
FORWARD_BATCH = 64


def method_inputs(fn: CamMethod) -> list[str]:
    """The engine inputs (see :data:`INPUTS`) a method asks for, in its parameter order."""
    return [p for p in inspect.signature(fn).parameters if p in INPUTS]


def gradient_methods() -> list[str]:
    """Registered methods that are pure functions of (activations, gradients): the ones SmoothGrad can wrap."""
    return [name for name, fn in METHODS.items() if method_inputs(fn) == ["acts", "grads"]]


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
        raise ValueError(f"SmoothGrad needs smooth_n >= 1 and smooth_noise >= 0, got {n} and {noise}")
    sigma = noise * (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(-1, 1, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, *images.shape), generator=gen).to(images)
    return (images[None] + sigma[None] * eps).flatten(0, 1)


def _resolve(name: str) -> tuple[CamMethod, bool]:
    """(method function, smoothed?) for a method name; a clear error for unknown names."""
    smooth = name.startswith(SMOOTH_PREFIX)
    base = name[len(SMOOTH_PREFIX):] if smooth else name
    if base not in METHODS:
        raise ValueError(f"unknown CAM method {name!r}; valid methods: {', '.join(METHODS)} "
                         f"(and {SMOOTH_PREFIX}<m> for m in {', '.join(gradient_methods())})")
    if smooth and base not in gradient_methods():
        raise ValueError(f"{name!r}: SmoothGrad wraps gradient methods only ({', '.join(gradient_methods())})")
    return METHODS[base], smooth


def _call(name: str, fn: CamMethod, inputs: Mapping[str, Callable[[], object]], options: Mapping[str, object]):
    """Call ``fn`` with the engine inputs and options its parameters name."""
    kwargs = {}
    for p, param in inspect.signature(fn).parameters.items():
        if p in inputs:
            kwargs[p] = inputs[p]()
        elif p in options:
            kwargs[p] = options[p]
        elif param.default is inspect.Parameter.empty:
            raise TypeError(f"method {name!r} needs {p!r}, which the engine cannot supply (inputs: {', '.join(INPUTS)})")
    return fn(**kwargs)


def _inputs(bundle: ModelBundle, images: torch.Tensor, cap: Capture, layer: str,
            rows: slice) -> dict[str, Callable[[], object]]:
    """Lazy engine inputs for one layer and the batch rows ``rows`` of the pass."""
    classes = cap.class_idx[rows]
    return {"acts": lambda: cap.activations[layer][rows], "grads": lambda: cap.gradients[layer][rows],
            "classes": lambda: classes, "images": lambda: images, "model": lambda: bundle.model,
            "forward": lambda: lambda x: infer(bundle, x),
            "tail": lambda: split_at(bundle, layer).tail,
            "head_weight": lambda: classifier_rows(bundle, layer, classes)}


def compute_cams(bundle: ModelBundle | nn.Module, images: torch.Tensor,
                 methods: Sequence[str] = ("gradcam", "layercam", "hybrid"),
                 class_idx: int | Sequence[int] | None = None, alpha: float = 0.7,
                 layer: str | Sequence[str] | None = None, score: str = "logit", gamma: float = 2.0, *,
                 top_k: int | None = SCORECAM_TOP_K, batch_size: int = FORWARD_BATCH, scorecam_weights: str = "softmax",
                 recipro_kernel: str = "onehot", smooth_n: int = 8, smooth_noise: float = 0.15,
                 seed: int = SEED, reshape: Reshape | None = None) -> CamMaps:
    """CAMs of a preprocessed batch (N, 3, H, W) for every method, from ONE forward and at most ONE backward.

    ``bundle`` is a :class:`ModelBundle` or any classifier ``nn.Module`` (wrapped once by
    :func:`helpers.cam.models.as_bundle`: without ``layer`` the last spatial map is used).
    ``reshape`` turns the layer's output into (N, C, h, w) (default: tokens and channels-last
    maps are handled by :func:`helpers.cam.layers.as_map`).

    Returns ``{method: (N, H, W)}`` float maps in [0, 1], bilinearly upsampled to the input size.
    ``class_idx``: None (each image's predicted class), an int, or N ints. ``layer``: one layer
    name or several (multi-layer fusion, :func:`fuse_layers` with ``gamma``); default the
    bundle's target layer. ``alpha`` is the hybrid's Grad-CAM exponent.

    Options of the further methods (:mod:`helpers.cam.methods`): ``top_k`` (Score-CAM keeps the k
    channels of largest mean activation; None keeps all), ``batch_size`` (images per forward of
    Score-CAM / Recipro-CAM), ``scorecam_weights`` ("softmax" or "probability"),
    ``recipro_kernel`` ("onehot" or "gaussian"). ``"smooth-<method>"`` averages a gradient
    method's raw maps over ``smooth_n`` noisy copies (noise ``smooth_noise`` x the image's value
    range, seeded by ``seed``) that share the pass with the clean batch.
    Bad input (:func:`helpers.cam.checks.check_images`) is a ValueError before any forward.
    """
    check_images(images, bundle)
    plan = [(name, *_resolve(name)) for name in methods]
    bundle = ensure_bundle(bundle, images.shape[-2:], layer, reshape)
    if any("tail" in method_inputs(fn) for _, fn, _ in plan):  # no split for this model: say so before any forward
        for lay in [bundle.target_layer] if layer is None else [layer] if isinstance(layer, str) else layer:
            split_at(bundle, lay)
    n = len(images)
    batch = images
    if any(smooth for _, _, smooth in plan):
        batch = torch.cat([images, noisy_copies(images, smooth_n, smooth_noise, seed)])
    backward = any("grads" in method_inputs(fn) for _, fn, _ in plan)
    cap = capture(bundle, batch, class_idx, layer, score, backward=backward, explained=n)
    options = {"alpha": alpha, "top_k": top_k, "batch_size": batch_size, "scorecam_weights": scorecam_weights,
               "recipro_kernel": recipro_kernel}
    size = tuple(images.shape[-2:])
    on_device = images.to(bundle.device)
    out = CamMaps()
    with torch.no_grad():
        for name, fn, smooth in plan:
            per_layer = []
            for lay in cap.layers:
                raw = _call(name, fn, _inputs(bundle, on_device, cap, lay, slice(n, None) if smooth else slice(0, n)),
                            options)
                if smooth:
                    raw = raw.view(smooth_n, n, *raw.shape[1:]).mean(dim=0)
                per_layer.append(normalise_max(upsample(raw, size)))
            out[name] = per_layer[0] if len(per_layer) == 1 else fuse_layers(per_layer, gamma)
    out.class_idx, out.logits = cap.class_idx[:n], cap.logits[:n]
    return out

