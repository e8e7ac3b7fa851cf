"""Capture the activations of named layers and their gradients, with hooks that never leak, and never change the model.

:class:`LayerCapture` is a context manager: on entry it freezes every parameter
(``requires_grad=False``) and hooks the layers; on exit, also after an exception, it removes
the hooks and restores the flags. The first hooked layer reached in the forward becomes the
root of the autograd graph (its output is detached and made to require grad), so nothing
below it is recorded and gradients are taken with ``torch.autograd.grad`` with respect to the
captured maps only: no parameter ever receives a ``.grad``. :func:`eval_mode` runs a model left in
train mode in eval mode for one call, so dropout and BatchNorm's running statistics stay untouched.
"""
from __future__ import annotations

import warnings
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Iterator, Sequence

import torch
from torch import nn

from .layers import get_layer


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters with ``requires_grad=False`` inside the block, their flags restored afterwards
    (also after an exception): gradients taken inside reach the captured maps only, never a parameter."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class LayerCapture:
    """Context manager recording the output of each named layer during one forward pass."""

    def __init__(self, model: nn.Module, layers: Sequence[str], recommended: Sequence[str] = ()) -> None:
        self.model = model
        self.names = list(dict.fromkeys(layers))
        self.modules = {name: _layer(model, name, recommended) for name in self.names}
        self.activations: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._frozen = ExitStack()

    def _hook(self, name: str, copy: bool = True):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            self._calls[name] = self._calls.get(name, 0) + 1
            if not output.requires_grad:  # the shallowest hooked layer: root of the graph
                output = output.detach().requires_grad_(True)
            self.activations[name] = output
            # Downstream gets a copy, so in-place ops (e.g. ResNet's `out += identity`) leave the map intact.
            return output.clone() if copy else output
        return hook

    def __enter__(self) -> "LayerCapture":
        try:
            self._frozen.enter_context(frozen(self.model))
            self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._frozen.close()
        self.activations = {n: a.detach() for n, a in self.activations.items()}

    def feed(self, name: str, output: torch.Tensor, copy: bool = True) -> torch.Tensor:
        """Record ``output`` as layer ``name``'s output when its module ran elsewhere (the inference engine).

        It is treated exactly like a hooked output (a root of the graph); returns what the rest of
        the network runs on: a copy, or with ``copy=False`` (a rest that changes nothing in place, such as
        pooling + a linear classifier) the recorded map itself.
        """
        return self._hook(name, copy)(self.modules[name], (), output)

    def check_captured(self) -> None:
        """Every layer fired exactly once in the forward pass, or a clear error."""
        for name in self.names:
            calls = self._calls.get(name, 0)
            if calls != 1:
                raise RuntimeError(
                    f"layer {name!r} ran {calls} times in one forward pass; a CAM layer must run exactly once "
                    "(a module reused inside the network cannot be hooked: wrap the model so the map is one "
                    "module's output)")

    def gradients(self, score: torch.Tensor) -> dict[str, torch.Tensor]:
        """d(score.sum())/d(activation) for every captured layer, from one backward pass."""
        self.check_captured()
        acts = [self.activations[n] for n in self.names]
        grads = torch.autograd.grad(score.sum(), acts, allow_unused=True)
        return {n: torch.zeros_like(a) if g is None else g for n, a, g in zip(self.names, acts, grads, strict=True)}


def _layer(model: nn.Module, name: str, recommended: Sequence[str]) -> nn.Module:
    """The sub-module ``name`` found along its dotted path (no walk of the whole model); an unknown name
    gets :func:`helpers.cam.models.get_layer`'s error, which lists valid names."""
    try:
        return model.get_submodule(name) if name else get_layer(model, name, recommended)
    except AttributeError:
        return get_layer(model, name, recommended)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block and give every module its own mode back afterwards.

    A model with any module in train mode gets one warning: a train-mode forward would use the batch's
    BatchNorm statistics and dropout, and would update the running statistics. Every entry point that
    runs a model (the CAM pass, :func:`helpers.cam.backend.infer`, the tracing of ``as_bundle``) runs in here.
    """
    training = [m for m in model.modules() if m.training]
    if training:
        warnings.warn(f"{type(model).__name__} has {len(training)} module(s) in train mode: it runs in eval mode "
                      f"here (BatchNorm running statistics, no dropout; its buffers are not updated) and the modes "
                      f"are restored afterwards; call model.eval() to silence this", stacklevel=4)
        model.eval()
    try:
        yield
    finally:
        for module in training:
            module.training = True
