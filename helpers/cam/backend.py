"""The inference backend: ONE place that decides how every gradient-free forward runs.

:func:`forward_fn` turns a module (eval mode) into a callable ``x (N, C, H, W) -> output`` that
runs without autograd. On the CPU the default (``"auto"``) is ONNX Runtime: the module is
exported once per input size (opset 17, dynamic batch axis) to an ``.onnx`` file in
:func:`cache_dir`, named by the model's name, a hash of its weights and the input shape, and
reused across runs and processes; the session is built once per process and module, and
rebuilt when the module's weights change (a copy whose weights were randomised gets its own
file, never the trained model's). Plain PyTorch runs on CUDA, for a module in train mode called
through :func:`forward_fn` itself (:func:`infer` runs every model in eval mode), for non-float32
inputs, and wherever export or ONNX Runtime fails (then with one warning saying why).

Settings: the ``backend`` argument (``"auto"``, ``"onnxruntime"``, ``"torch"``; a bundle's
``backend`` field), else the environment variable ``XAI_BACKEND``, else ``"auto"``.
``precision="bf16"`` (opt-in, for exploration only: probabilities move by ~1e-3) compiles the
same file with OpenVINO at bf16 inference precision; the default ``"fp32"`` matches eager
PyTorch within float noise (tests: 1e-5).
"""
from __future__ import annotations

import hashlib
import os
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from ..config import atomic_file
from .allocator import keep_freed_memory
from .hooks import eval_mode

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torch")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
OPSET = 17
Forward = Callable[[torch.Tensor], torch.Tensor]

#: Per module: {(input shape, backend, precision): (weights fingerprint, runner)}. Weak keys, so a
#: deleted model frees its sessions.
_RUNNERS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def cache_dir() -> Path:
    """Folder of the exported ``.onnx`` files: ``$XAI_CACHE_DIR``, else ``~/.cache/xai-cam/onnx``."""
    return Path(os.environ.get("XAI_CACHE_DIR") or Path.home() / ".cache" / "xai-cam" / "onnx")


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend that will run: ``"onnxruntime"`` or ``"torch"`` (argument > ``XAI_BACKEND`` > auto)."""
    choice = backend or os.environ.get("XAI_BACKEND") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}; valid backends: {', '.join(BACKENDS)} "
                         "(set by argument or the XAI_BACKEND environment variable)")
    if choice == "torch":
        return "torch"
    if torch.device(device).type != "cpu":
        if choice == "onnxruntime":
            warnings.warn(f"backend 'onnxruntime' runs on the CPU only; using PyTorch on {device}", stacklevel=3)
        return "torch"
    return "onnxruntime"


def weights_hash(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the module's state dict: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _fingerprint(module: nn.Module) -> tuple:
    """Cheap identity of the current weights: storage address and in-place version of each tensor."""
    return tuple((t.data_ptr(), t._version) for m in module.modules() for d in (m._parameters, m._buffers)
                 for t in d.values() if t is not None)


def onnx_path(module: nn.Module, name: str, shape: tuple[int, ...]) -> Path:
    """The cache file of ``module`` for inputs of per-image shape ``shape``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    dims = "x".join(map(str, shape))
    return cache_dir() / f"{safe}-{weights_hash(module)}-{dims}-op{OPSET}-torch{torch.__version__.split('+')[0]}.onnx"


def export_onnx(module: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """Export ``module`` (eval mode) for float32 inputs (n, *shape), batch axis dynamic; atomic write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), atomic_file(path) as f:  # shape-inference notes of the exporter are harmless
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, *shape), f, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=OPSET, dynamo=False)
    return path


def ensure_onnx(module: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    """``path``, exported by :func:`export_onnx` unless it exists. A file lock beside it makes processes
    that need the same file at once export it once: the others wait, then read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            export_onnx(module, path, shape)
    return path


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (default: torch's)."""
    import onnxruntime as ort

    keep_freed_memory()  # without its arena the session's buffers come from malloc: keep them (cam.allocator)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle workers must not spin: autograd in torch often runs right after (the CAM pass).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Buffers from malloc, not a private arena that only grows: the curves' chunks vary in size, and
    # freed memory is then shared with PyTorch (peak RSS of a 32-image evaluation 1.80 -> 1.77 GB,
    # 16 images 1.79 -> 1.53 GB, measured with the Makefile's malloc settings).
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_runner(path: Path, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    if precision == "bf16":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "bf16",
                                                         "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            # what OpenVINO compiled, not what the CPU lacks, says whether the numbers move: on an AVX-512 CPU
            # without bf16 units it emulates bf16 (measured: probabilities move by 1e-2), elsewhere it runs fp32
            emulated = compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
            warnings.warn("precision='bf16': this CPU has no bf16 units, so " +
                          ("OpenVINO emulates bf16 (no speed-up; results move as in bf16)" if emulated else
                           "OpenVINO runs it at fp32 (no speed-up, no change in results)"), stacklevel=5)
        return lambda x: compiled(x)[0]
    session = ort_session(path)
    return lambda x: session.run(None, {"x": x})[0]


def _build(module: nn.Module, name: str, shape: tuple[int, ...], precision: str) -> Forward | None:
    """An engine runner for the module's current weights, or None (after one warning) if that fails."""
    try:
        run = _ort_runner(ensure_onnx(module, onnx_path(module, name, shape), shape), precision)
    except Exception as err:  # any exporter or runtime failure: fall back, say why
        warnings.warn(f"{name}: cannot run on the inference engine ({type(err).__name__}: {str(err)[:300]}); "
                      "using plain PyTorch for its gradient-free forwards", stacklevel=4)
        return None

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(run(x.detach().cpu().contiguous().numpy())))
    return forward


def forward_fn(module: nn.Module, device: torch.device | str, *, name: str | None = None, backend: str | None = None,
               precision: str | None = None) -> Forward:
    """``x -> module(x)`` without autograd, on the backend chosen here (see the module docstring).

    The returned callable takes a float batch (N, C, H, W) on ``device`` and returns the output on
    ``device``. ``name`` names the cache file (default: the module's class name).
    """
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    which = resolve_backend(backend, device)
    if precision == "bf16" and which == "torch":
        raise ValueError("precision='bf16' needs the inference engine (CPU, backend 'auto' or 'onnxruntime')")
    label = name or type(module).__name__

    def run(x: torch.Tensor) -> torch.Tensor:
        if which == "torch" or module.training or x.dtype != torch.float32:
            with torch.no_grad():
                return module(x)
        key, print_ = (tuple(x.shape[1:]), precision), _fingerprint(module)
        entries = _RUNNERS.setdefault(module, {})
        if key not in entries or entries[key][0] != print_:
            entries[key] = (print_, _build(module, label, key[0], precision))
        engine = entries[key][1]
        if engine is None:
            with torch.no_grad():
                return module(x)
        return engine(x).to(device)
    return run


def infer(bundle: Any, images: torch.Tensor) -> torch.Tensor:
    """Logits of a preprocessed batch, no autograd, on the bundle's backend; on the bundle's device.

    ``bundle`` needs ``model`` and ``device``; ``name``, ``backend`` and ``precision`` are read
    when present (a :class:`helpers.cam.bundle.ModelBundle` has them). Every gradient-free forward of
    the package (the metrics, ROAD, top-k, Score-CAM) comes here, so a model left in train mode runs
    in eval mode and gets its modes back (:func:`helpers.cam.hooks.eval_mode`): its buffers never change.
    """
    fn = forward_fn(bundle.model, bundle.device, name=getattr(bundle, "name", None),
                    backend=getattr(bundle, "backend", None), precision=getattr(bundle, "precision", None))
    with eval_mode(bundle.model):
        return fn(images.to(bundle.device))
