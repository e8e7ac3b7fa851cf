"""The explorer without a browser: maps against the engine, the cache, uploads, faithfulness, the page's set-up."""
from __future__ import annotations

import dataclasses
import datetime
import io
import sys

import ipywidgets as widgets
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF
from toy import GapLinear, toy_bundle

from helpers.cam.engine import compute_cams
from helpers.data.images import ImageLoadError
from helpers.evaluation.alpha_sweep import fused_maps, raw_maps
from helpers.evaluation.metrics import PRESETS, insertion_deletion_auc
from helpers.evaluation.policy import THESIS_ALPHA
from helpers.teaching import explorer as page
from helpers.teaching import interactive
from helpers.teaching.interactive import GIVEN, HybridExplorer


@pytest.fixture()
def toy():
    """A 6-class toy network, one 8 x 8 image, and a preprocessing that takes PIL images to 8 x 8 tensors."""
    torch.manual_seed(0)
    bundle = toy_bundle(GapLinear(torch.randn(6, 3)))
    bundle = dataclasses.replace(bundle, preprocess=lambda im: TF.to_tensor(im.convert("RGB").resize((8, 8))))
    return bundle, torch.rand(3, 8, 8)


def upload(name: str, content: bytes) -> tuple[dict]:
    return ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_shown_maps_are_the_engines_and_the_slider_only_refuses(toy, monkeypatch) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image, k=5, alpha=0.4)
    top = bundle.model(image[None]).topk(5).indices[0].tolist()
    assert [v for _, v in explorer.dropdown.options] == top and explorer.class_idx == top[0]
    assert torch.equal(explorer.update(), fused_maps(raw_maps(bundle, image[None], top[0]), 0.4, size=(8, 8))[0])
    passes = []
    monkeypatch.setattr(interactive, "raw_maps", lambda *a: passes.append(a) or raw_maps(*a))
    before = explorer.pictures[1].value
    explorer.slider.value = 0.9
    explorer.dropdown.value = top[2]  # a top class: its raw maps came with the first pass
    assert passes == [] and explorer.pictures[1].value != before
    expected = fused_maps(raw_maps(bundle, image[None], top[2]), 0.9, size=(8, 8))[0]
    assert torch.allclose(explorer.show_hybrid(), expected, atol=1e-6)
    explorer.slider.value = 1.0
    gradcam = compute_cams(bundle, image[None], ("gradcam",), target=top[2])["gradcam"][0]
    assert torch.allclose(explorer.update(), gradcam, atol=1e-6) and passes == []


def test_any_class_can_be_searched_and_is_computed_once(toy, monkeypatch) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image, k=2)
    other = next(c for c in range(6) if c not in explorer.classes)
    passes = []
    monkeypatch.setattr(interactive, "raw_maps", lambda *a: passes.append(a[2]) or raw_maps(*a))
    explorer.search.value = f"{bundle.class_names[other]} ({other})"
    assert explorer.class_idx == other and explorer.dropdown.value is None and passes == [[other]]
    layercam = compute_cams(bundle, image[None], ("layercam",), target=other)["layercam"][0]
    assert torch.allclose(explorer.fused(0.0), layercam, atol=1e-6)
    explorer.slider.value = 0.2
    explorer.search.value = "not a class"  # typing: nothing changes until a name is complete
    assert explorer.class_idx == other and passes == [[other]]
    with pytest.raises(ValueError, match="class"):
        explorer.set_class(6)


def test_a_bad_upload_shows_load_images_error_and_keeps_the_photo(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image)
    shown = explorer.pictures[1].value
    explorer.upload.value = upload("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert "upload refused: broken.png: " in explorer.message.value and "/tmp" not in explorer.message.value
    assert explorer.current == GIVEN and explorer.pictures[1].value == shown
    explorer.upload.value = upload("small.png", png_bytes(Image.new("RGB", (8, 8))))
    assert "too small" in explorer.message.value
    photo = Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy())
    explorer.upload.value = upload("mine.png", png_bytes(photo))
    assert explorer.message.value == "" and explorer.current == "upload: mine.png"
    assert torch.equal(explorer.image, bundle.preprocess(photo))
    assert explorer.photo.options == (GIVEN, "upload: mine.png")
    explorer.photo.value = GIVEN
    assert torch.equal(explorer.image, image)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_faithfulness_gives_the_rise_preset_aucs_of_the_three_maps(toy, monkeypatch) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image, alpha=0.3)
    scored = []
    real = interactive.insertion_deletion_curves
    monkeypatch.setattr(interactive, "insertion_deletion_curves", lambda *a: scored.append(a[2]) or real(*a))
    curves = explorer.faithfulness()
    maps = torch.stack([explorer.fused(a) for a in (1.0, 0.3, 0.0)])
    assert len(scored) == 2 and all(torch.equal(m, maps) for m in scored)  # Grad-CAM, hybrid at a, LayerCAM
    c = explorer.class_idx
    expected = insertion_deletion_auc(bundle, image[None].repeat(3, 1, 1, 1), maps, [c] * 3, preset="rise")
    assert curves["insertion"].shape == (3, PRESETS["rise"]["steps"] + 1)
    for mode in ("insertion", "deletion"):
        assert torch.allclose(interactive.auc(curves[mode]), expected[mode], atol=1e-6)
    assert f"insertion {float(expected['insertion'][1]):.3f}" in explorer.status.value
    assert explorer.curves.value[:4] == b"\x89PNG"


def test_the_predicted_a_is_shown_only_when_the_hook_gives_one(toy) -> None:
    bundle, image = toy
    assert HybridExplorer(bundle, image).predicted.layout.display == "none"
    seen = []

    def predict(b, x, c, layer):
        seen.append((c, layer))
        return 0.35 if c == seen[0][0] else None

    explorer = HybridExplorer(bundle, image, predict_alpha=predict)
    assert "0.35" in explorer.predicted.value and explorer.predicted.layout.display is None
    explorer.dropdown.value = explorer.classes[1]
    assert explorer.predicted.value == "" and explorer.predicted.layout.display == "none"
    assert seen[-1] == (explorer.classes[1], "features")


def test_the_page_opens_at_the_thesis_a_and_prints_nothing_onto_the_page(toy, capsys, monkeypatch) -> None:
    bundle, _ = toy
    bundle = dataclasses.replace(bundle, name="efficientnet_lite0")  # the model notebook 4 chose a = 1 for
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", terminal)

    def predictor(folder, spec, b):
        print("checking the parts' hashes: 1/1")
        print("UserWarning: part 'alpha_head' not checked against the code", file=sys.stderr)  # as a warning shows
        return lambda *a: 0.35

    monkeypatch.setattr(page, "StudyAlphaPredictor", predictor)
    explorer = page.page_explorer(bundle=bundle)
    assert explorer.slider.value == THESIS_ALPHA == 0.7 and "predicted a = <b>0.35</b>" in explorer.predicted.value
    assert capsys.readouterr() == ("", "")  # a kernel's stdout and stderr are the page's output
    assert "checking the parts' hashes" in terminal.getvalue() and "not checked" in terminal.getvalue()


def descendants(widget: widgets.Widget) -> list[widgets.Widget]:
    return [widget, *(d for child in getattr(widget, "children", ()) for d in descendants(child))]


def test_the_page_has_no_progress_bar(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image)
    explorer.faithfulness()  # its progress is the status line's text
    assert not [w for w in descendants(explorer.widget) if isinstance(w, (widgets.IntProgress, widgets.FloatProgress))]
    assert explorer.status.value.startswith("AUC ")


def test_values_forged_by_the_page_are_checked_in_the_kernel(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image, alpha=0.4)
    shown = explorer.show_hybrid()
    for forged in (float("nan"), "nan", float("inf"), -0.5, 5.0):
        explorer.slider.set_state({"value": forged})
        assert explorer.slider.value == 0.4 and "a = 0.40" in explorer.captions[1].value
    explorer.slider.set_state({"max": 5.0, "value": 3.0})  # a forged range: the kernel's stays [0, 1]
    assert explorer.slider.value == 0.4 and torch.equal(explorer.show_hybrid(), shown)
    before = explorer.class_idx
    for text in ("sneaky (99)", "x (y)"):
        explorer.search.set_state({"options": [text], "value": text})  # the page syncs the options too
        assert explorer.class_idx == before
    for name, content in ((None, b"x"), (5, b"x"), ("a.png", "text"), ("a.png", None)):
        explorer.upload.set_state({"value": [{"name": name, "type": "", "size": 1, "content": content,
                                              "last_modified": 0}]})  # as the page's message arrives
        assert "upload refused: the page sent no file name or no file content" in explorer.message.value
    assert explorer.current == GIVEN


def test_an_upload_over_the_limit_is_refused_with_its_size_before_it_is_read(toy, monkeypatch) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image)
    monkeypatch.setattr(interactive, "load_image", lambda path: pytest.fail("the file was read"))
    explorer.upload.value = upload("../../big.png", b"\0" * (interactive.MAX_UPLOAD_BYTES + 1))
    assert "upload refused: big.png: 32.0 MiB is over the upload limit of 32 MiB" in explorer.message.value


def test_photo_sources_are_the_packaged_photos_then_imagenet_when_present(tmp_path) -> None:
    packaged = page.photo_sources(tmp_path / "absent")
    assert list(packaged)[0] == "chelsea (tabby)" and len(packaged) == len(page.PHOTOS)
    assert packaged["coffee (espresso)"]().size == (600, 400)
    with_real = page.photo_sources(tmp_path)  # a folder is present: the manifest's photos are offered
    real = [k for k in with_real if k.startswith("ImageNet ")]
    assert len(real) == 800 and "ImageNet test: tench (0)" in real
    with pytest.raises(ImageLoadError, match="tench.JPEG: no such file"):
        with_real["ImageNet test: tench (0)"]()


def test_the_server_listens_on_localhost_only_and_serves_no_files() -> None:
    cmd = page.voila_command(8123)
    assert cmd[1:4] == ["-m", "helpers.teaching.explorer_server", str(page.NOTEBOOK)] and page.NOTEBOOK.is_file()
    assert {"--port=8123", "--Voila.port_retries=0", "--Voila.ip=127.0.0.1", "--Voila.open_browser=False",
            "--VoilaConfiguration.file_denylist=.*", "--VoilaConfiguration.show_tracebacks=False",
            "--VoilaConfiguration.allow_template_override=NO", "--MappingKernelManager.cull_idle_timeout=600",
            f"--ExplorerVoila.websocket_max_message_size={2 * interactive.MAX_UPLOAD_BYTES}"} <= set(cmd)
    assert "--Voila.open_browser=True" in page.voila_command(8123, open_browser=True)


def test_an_unknown_model_is_refused_before_any_server_starts(capsys, monkeypatch) -> None:
    from helpers import cli

    monkeypatch.setattr(page.os, "execve", lambda *a: pytest.fail("the server was started"))
    assert cli.main(["explore", "--model", "no_such_net", "--no-browser"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown model 'no_such_net'; use efficientnet_lite0/1/2, "
                                              "resnet50, auto, a torchvision name or timm/<name>")


def test_explore_prints_its_url_and_becomes_voila_for_the_chosen_model(capsys, monkeypatch) -> None:
    from helpers import cli

    calls = []
    monkeypatch.setattr(page.os, "execve", lambda *a: calls.append(a))
    assert cli.main(["explore", "--port", "8124", "--model", "efficientnet_lite1"]) == 0
    [(exe, cmd, env)] = calls
    assert cmd == page.voila_command(8124, open_browser=True, idle_s=page.KERNEL_IDLE_S) and exe == cmd[0]
    assert env[page.MODEL_ENV] == "efficientnet_lite1" and env["PYTHONPATH"].split(page.os.pathsep)[0] == str(page.ROOT)
    assert capsys.readouterr().out.startswith("explorer: http://127.0.0.1:8124/")
