"""The inference backend: equal to eager PyTorch within 1e-5, exported once, invalidated by new weights."""
from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import os
import warnings
from pathlib import Path

import export_worker
import openvino
import pytest
import torch
from export_worker import small_net
from torch import nn

from helpers.cam import backend as B
from helpers.cam.bundle import ModelBundle
from helpers.cam.engine import compute_cams, engine_split
from helpers.cam.options import ScoreCAM, Smooth
from helpers.evaluation.metrics import class_probabilities, insertion_deletion_auc
from helpers.evaluation.sanity import randomise

ROOT = Path(__file__).resolve().parents[2]

ALL = ("gradcam", "layercam", "hybrid", "cam", "gradcam++", "xgradcam", "hirescam", "scorecam", "reciprocam",
       "smooth-hybrid")


def eager(bundle: ModelBundle) -> ModelBundle:
    return dataclasses.replace(bundle, backend="torch")


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The ONNX files this test exports (the real export runs)."""
    done, real = [], B.export_onnx

    def counted(module: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
        done.append(path)
        return real(module, path, shape)
    monkeypatch.setattr(B, "export_onnx", counted)
    return done


def test_probabilities_equal_eager_torch(lite0: ModelBundle, photo_batch: torch.Tensor) -> None:
    idx = torch.tensor([1, 2, 3])
    got = class_probabilities(lite0, lambda a, b: photo_batch[a:b], 3, idx, chunk_size=2)
    want = class_probabilities(eager(lite0), lambda a, b: photo_batch[a:b], 3, idx, chunk_size=2)
    assert (got - want).abs().max() < 1e-5
    probs = B.infer(lite0, photo_batch).softmax(1)
    with torch.inference_mode():
        ref = lite0.model(photo_batch).softmax(1)
    assert (probs - ref).abs().max() < 1e-5 and probs.shape == (3, 1000)
    assert os.listdir(B.cache_dir())  # it did run on the engine: the model was exported


def test_curve_aucs_equal_eager_torch(lite0: ModelBundle, photo_batch: torch.Tensor) -> None:
    maps = compute_cams(eager(lite0), photo_batch, ("gradcam",))
    got = insertion_deletion_auc(lite0, photo_batch, maps["gradcam"], maps.class_idx, steps=8)
    want = insertion_deletion_auc(eager(lite0), photo_batch, maps["gradcam"], maps.class_idx, steps=8)
    for mode in got:
        assert (got[mode] - want[mode]).abs().max() < 1e-5


def test_every_cam_equals_eager_torch_and_batch_equals_single(lite0: ModelBundle, photo_batch: torch.Tensor) -> None:
    assert engine_split(lite0, ["head"]) is not None  # the CAM pass below the head runs on the engine
    methods = [{"scorecam": ScoreCAM(top_k=4), "smooth-hybrid": Smooth("hybrid", n=2)}.get(m, m) for m in ALL]
    got = compute_cams(lite0, photo_batch, methods)
    want = compute_cams(eager(lite0), photo_batch, methods)
    assert torch.equal(got.class_idx, want.class_idx) and (got.logits - want.logits).abs().max() < 1e-4
    for m in ALL:
        assert (got[m] - want[m]).abs().max() < 1e-5, m
        assert got[m].amax() > 0.99, m  # real maps, not zeros
    single = [compute_cams(lite0, photo_batch[i:i + 1], methods) for i in range(3)]
    for m in ALL[:-1]:  # (SmoothGrad's seeded noise depends on the batch, by design)
        assert (torch.cat([s[m] for s in single]) - got[m]).abs().max() < 1e-5, m


def test_layers_with_a_deeper_tail_keep_the_torch_pass(lite0: ModelBundle, photo_batch: torch.Tensor) -> None:
    assert engine_split(lite0, ["stages.4"]) is None and engine_split(lite0, list(lite0.multi_layers)) is None
    assert engine_split(eager(lite0), ["head"]) is None
    for layer in ("stages.4", list(lite0.multi_layers)):
        got, want = (compute_cams(b, photo_batch[:1], layer=layer) for b in (lite0, eager(lite0)))
        assert all(torch.equal(got[m], want[m]) for m in got)


def test_forced_torch_by_argument_and_environment(monkeypatch: pytest.MonkeyPatch, exports: list[Path]) -> None:
    net, x = small_net(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = net(x)
    assert torch.equal(B.forward_fn(net, "cpu", backend="torch")(x), want)
    monkeypatch.setenv("XAI_BACKEND", "torch")
    assert B.resolve_backend(None, "cpu") == "torch" and torch.equal(B.forward_fn(net, "cpu")(x), want)
    assert B.resolve_backend("onnxruntime", "cpu") == "onnxruntime"  # the argument wins over the variable
    assert exports == []
    monkeypatch.setenv("XAI_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'.*XAI_BACKEND"):
        B.forward_fn(net, "cpu")


def test_cuda_keeps_plain_pytorch() -> None:
    assert B.resolve_backend("auto", "cuda") == "torch" and B.resolve_backend(None, torch.device("cuda:0")) == "torch"
    with pytest.warns(UserWarning, match="CPU only"):
        assert B.resolve_backend("onnxruntime", "cuda") == "torch"
    with pytest.raises(ValueError, match="bf16"):
        B.forward_fn(small_net(), "cpu", backend="torch", precision="bf16")


def test_export_once_reused_by_a_new_copy_and_across_calls(exports: list[Path]) -> None:
    net, x = small_net(1), torch.randn(3, 3, 8, 8)
    first = B.forward_fn(net, "cpu", name="small")(x)
    path = B.onnx_path(net, "small", (3, 8, 8))
    assert exports == [path] and path.is_file()
    stamp = path.stat().st_mtime_ns
    again = B.forward_fn(copy.deepcopy(net), "cpu", name="small")  # a new load of the same weights
    assert torch.allclose(again(x), first, atol=1e-6) and torch.allclose(again(x[:1]), first[:1], atol=1e-6)
    assert exports == [path] and path.stat().st_mtime_ns == stamp
    B.forward_fn(net, "cpu", name="small")(torch.randn(1, 3, 10, 10))  # another input size: its own file
    assert len(exports) == 2 and exports[1] == B.onnx_path(net, "small", (3, 10, 10))


def test_changed_weights_never_use_the_old_file(lite0: ModelBundle, photo_batch: torch.Tensor) -> None:
    # a randomised copy (as in the sanity check), on the engine: its own weights, not the trained model's
    work = dataclasses.replace(lite0, model=copy.deepcopy(lite0.model), backend="auto")
    randomise(work.model.classifier, 3)
    got = B.infer(work, photo_batch)
    with torch.inference_mode():
        want, trained = work.model(photo_batch), lite0.model(photo_batch)
    assert (got - want).abs().max() < 1e-4 and (got - trained).abs().max() > 1e-2
    # the same module changed in place after its session was built: the session is rebuilt
    net, x = small_net(2), torch.randn(2, 3, 8, 8)
    fn = B.forward_fn(net, "cpu")
    fn(x)
    with torch.no_grad():
        net[5].weight.mul_(-2)
        want = net(x)
    assert torch.allclose(fn(x), want, atol=1e-5)


class Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x).mean(dim=(2, 3))


def test_failed_export_falls_back_to_torch_with_one_warning() -> None:
    net, x = Unexportable().eval(), torch.randn(2, 3, 4, 4)
    fn = B.forward_fn(net, "cpu", name="unexportable")
    with pytest.warns(UserWarning, match="unexportable: cannot run on the inference engine.*plain PyTorch"):
        out = fn(x)
    assert torch.equal(out, net(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not on every call
        assert torch.equal(fn(x), net(x))


def test_bf16_is_opt_in_and_close(lite0: ModelBundle, photo_batch: torch.Tensor) -> None:
    assert lite0.precision is None  # fp32 by default
    fast = dataclasses.replace(lite0, precision="bf16")
    core = openvino.Core()
    has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        got = B.infer(fast, photo_batch).softmax(1)
    want = B.infer(lite0, photo_batch).softmax(1)
    assert torch.equal(got.argmax(1), want.argmax(1))
    # whether OpenVINO computes in bf16 is its own choice per CPU (bf16 units, or emulated on AVX-512): ask it
    onnx = B.onnx_path(lite0.model, lite0.name, tuple(photo_batch.shape[1:]))   # the file infer just ran
    in_bf16 = core.compile_model(str(onnx), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}).get_property(
        "INFERENCE_PRECISION_HINT") == openvino.Type.bf16
    if in_bf16:  # bf16 arithmetic: visibly different, still close; without bf16 units it says it emulates
        assert 1e-5 < (got - want).abs().max() < 3e-2
        assert not said if has_bf16 else "emulates bf16" in str(said[0].message)
    else:  # runs at fp32, and says so
        assert (got - want).abs().max() < 1e-5 and "runs it at fp32" in str(said[0].message)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        B.forward_fn(lite0.model, "cpu", precision="fp8")


def test_two_processes_needing_one_file_export_it_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    with pytest.MonkeyPatch.context() as mp:  # the children find this worktree's package and the tests' modules
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        children = [ctx.Process(target=export_worker.run, args=(str(tmp_path), start, results)) for _ in range(2)]
        for child in children:
            child.start()
        got = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert all(child.exitcode == 0 for child in children)
    # one export in all (the other process waited on the lock, then read the file); both outputs right
    assert sorted(n for n, _ in got) == [0, 1] and max(err for _, err in got) < 1e-5
    assert [f.name for f in tmp_path.glob("*.onnx")] == [f.name for f in tmp_path.glob("race-*.onnx")] != []
