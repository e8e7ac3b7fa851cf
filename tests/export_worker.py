"""A child process that runs a small network on the inference engine, its export slowed down (race tests)."""
from __future__ import annotations

import os
import time

import torch
from torch import nn


def small_net(seed: int = 0) -> nn.Module:
    """The small convolutional classifier of the backend tests."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval()


def run(cache: str, start, results, delay: float = 1.0) -> None:
    """Wait for ``start``, run the seeded net on the engine with ``cache`` as the ONNX folder; put (exports, output)."""
    os.environ["XAI_CACHE_DIR"] = cache
    from helpers.cam import backend as B

    real, done = B.export_onnx, []

    def slow(module: nn.Module, path, shape):
        done.append(str(path))
        time.sleep(delay)   # long enough for the other process to look for the file meanwhile
        return real(module, path, shape)

    B.export_onnx = slow
    net, x = small_net(2), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    start.wait()
    y = B.forward_fn(net, "cpu", name="race")(x)
    with torch.no_grad():
        want = net(x)
    results.put((len(done), float((y - want).abs().max())))
