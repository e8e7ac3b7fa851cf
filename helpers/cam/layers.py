"""Layer outputs as CAM maps: token/channels-last reshaping and the automatic choice of a CAM layer.

CAM methods work on maps (N, C, h, w). :func:`as_map` turns any layer output into one: a
channels-first map stays as it is, a channels-last map (N, H, W, C) (Swin) is permuted, and
ViT-style tokens (N, prefix + h*w, C) lose their class/distillation/register tokens and are
reshaped to the patch grid, inferred from the token count and the input's patch size. The same
rearrangement applied to the gradients gives exactly the gradients of the map (it only moves and
drops entries), so every gradient method works unchanged from the one pass.

:func:`trace_layers` runs one forward + backward on a dummy input with a hook on every module
(hooks removed afterwards, also after an exception) and records what each module outputs;
:func:`auto_layer` picks the last module whose output is a spatial map that the class score
depends on (for a ViT: the last block's first LayerNorm, because the patch tokens of later
outputs never reach the class token); :func:`sensible_layers` lists a few layers for multi-layer maps.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

#: A user's override: layer output -> (N, C, h, w).
Reshape = Callable[[torch.Tensor], torch.Tensor]
#: At most this many prefix tokens (class, distillation, register tokens) are dropped from ViT-style outputs.
MAX_PREFIX_TOKENS = 8


def _close(a: float, b: float, tol: float = 0.15) -> bool:
    return abs(a - b) <= tol * max(a, b)


def is_channels_last(shape: Sequence[int], input_hw: Sequence[int]) -> bool:
    """Whether a 4-d output (N, a, b, c) is (N, H, W, C) rather than (N, C, H, W), from the input's aspect ratio."""
    _, a, b, c = shape
    ratio = input_hw[0] / input_hw[1]
    return _close(a / b, ratio) and not _close(b / c, ratio)


def token_grid(tokens: int, input_hw: Sequence[int], patch: int | None = None) -> tuple[int, int, int]:
    """``(prefix, h, w)`` of a token sequence: prefix tokens to drop and the patch grid h x w.

    With ``patch`` the grid is the input size over the patch size; without it the grid is the
    factorisation of ``tokens - prefix`` (prefix 0 .. :data:`MAX_PREFIX_TOKENS`) closest to the
    input's aspect ratio. Raises ``ValueError`` when no grid fits.
    """
    H, W = input_hw
    if patch is not None:
        h, w = H // patch, W // patch
        if 0 <= tokens - h * w <= MAX_PREFIX_TOKENS:
            return tokens - h * w, h, w
    else:
        ratio = H / W
        for prefix in range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
            m = tokens - prefix
            h = max(1, round(math.sqrt(m * ratio)))
            if m % h == 0 and _close(h / (m // h), ratio, 0.01) and h > 1:
                return prefix, h, m // h
    raise ValueError(f"cannot lay {tokens} tokens out as a patch grid for a {H}x{W} input"
                     + (f" with patch size {patch}" if patch else "") + "; pass reshape=")


def as_map(x: torch.Tensor, input_hw: Sequence[int], patch: int | None = None) -> torch.Tensor:
    """A layer output as a channels-first map (N, C, h, w); see the module docstring."""
    if x.dim() == 4:
        return x.permute(0, 3, 1, 2) if is_channels_last(x.shape, input_hw) else x
    if x.dim() == 3:
        prefix, h, w = token_grid(x.shape[1], input_hw, patch)
        return x[:, prefix:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
    raise ValueError(f"a layer output of shape {tuple(x.shape)} is not a spatial map or a token sequence; "
                     "choose another layer or pass reshape=")


def patch_size_of(model: nn.Module) -> int | None:
    """The patch size of a ViT-style model (``model.patch_size`` or ``model.patch_embed.patch_size``), else None."""
    for owner in (model, getattr(model, "patch_embed", None)):
        size = getattr(owner, "patch_size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and len(set(size)) == 1:
            return int(size[0])
    return None


@dataclass(frozen=True)
class LayerInfo:
    """What one module output in the trace: its map shape (C, h, w) and whether the class score depends on it."""

    name: str
    map_shape: tuple[int, int, int]
    calls: int
    used: bool

    @property
    def spatial(self) -> bool:
        return self.map_shape[1] * self.map_shape[2] > 1


def trace_layers(model: nn.Module, example: torch.Tensor, reshape: Reshape | None = None,
                 patch: int | None = None) -> list[LayerInfo]:
    """Every module whose output can serve as a CAM map, in firing order, from one forward + backward.

    ``example`` is a dummy batch (1, 3, H, W). A module "is used" when the gradient of the top
    class score reaches the map part of its output (nonzero somewhere). Parameters get no ``.grad``.
    """
    outputs: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    to_map = reshape or (lambda t: as_map(t, example.shape[-2:], patch))

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() in (3, 4) and output.is_floating_point():
                outputs[name] = output
                return output.clone()  # in-place ops downstream leave the recorded output intact
            return None
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.enable_grad():
            x = example.detach().requires_grad_(True)
            logits = model(x)
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            names = [n for n, t in outputs.items() if t.requires_grad]
            grads = torch.autograd.grad(score, [outputs[n] for n in names], allow_unused=True) if names else ()
    finally:
        for handle in handles:
            handle.remove()
    infos = []
    for name, grad in zip(names, grads, strict=True):
        try:
            act_map = to_map(outputs[name].detach())
            used = grad is not None and bool(to_map(grad).abs().sum() > 0)
        except ValueError:
            continue
        infos.append(LayerInfo(name, tuple(act_map.shape[1:]), calls[name], used))
    return infos


def auto_layer(infos: Sequence[LayerInfo]) -> LayerInfo:
    """The last traced layer whose output is a spatial map (more than 1x1), runs once, and the class score uses."""
    usable = [i for i in infos if i.spatial and i.used and i.calls == 1]
    if not usable:
        raise ValueError("no layer outputs a spatial map that the class score depends on (an all-zero classifier "
                         "passes no gradient); pass layer= (and reshape=)")
    return usable[-1]


def block_pattern(name: str) -> str:
    r"""A regex matching ``name`` in every block: the digits of its deepest numbered part before the last part
    (``blocks.11.norm1`` -> ``blocks\.\d+\.norm1``, ``encoder_layer_11.ln_1`` -> ``encoder_layer_\d+\.ln_1``)."""
    parts = name.split(".")
    numbered = [i for i, p in enumerate(parts[:-1]) if re.search(r"\d", p)]
    parts = [re.escape(p) for p in parts]
    if numbered:
        parts[numbered[-1]] = re.sub(r"\d+", r"\\d+", parts[numbered[-1]])
    return r"\.".join(parts) + "$"


def sensible_layers(infos: Sequence[LayerInfo], target: str, keep: int = 6) -> list[str]:
    """Layers for multi-layer maps, shallow to deep: the last usable layer of each resolution (no deeper
    in the module tree than the target, or one level), or, when all share one grid (ViT), the
    target's counterparts in other blocks; at most ``keep``, ending at ``target``."""
    usable = [i for i in infos if i.spatial and i.used and i.calls == 1]
    names = [i.name for i in usable]
    if target not in names:
        return [target]
    depth = max(target.count("."), 1)  # stage-level modules, not the convolutions inside the next block
    usable = [i for i in usable[:names.index(target) + 1] if i.name.count(".") <= depth]
    ends = [a.name for a, b in zip(usable, usable[1:] + [None], strict=True)
            if b is None or b.map_shape[1:] != a.map_shape[1:]]
    if len(ends) < 3:  # one grid throughout: the same module in other blocks
        pattern = re.compile(block_pattern(target))
        ends = [n for n in names[:names.index(target) + 1] if pattern.match(n)]
    return ends[-keep:]


def get_layer(model: nn.Module, name: str, recommended: Sequence[str] = ()) -> nn.Module:
    """The sub-module called ``name``; an unknown name raises an error listing the valid ones."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        hint = ", ".join(recommended) if recommended else ", ".join(list(modules)[1:20]) + ", ..."
        raise ValueError(f"unknown layer {name!r}; valid layer names include: {hint} "
                         f"(any of the {len(modules) - 1} names in model.named_modules() works)")
    return modules[name]

