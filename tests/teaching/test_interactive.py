"""The explorer without a browser: maps against the engine, the cache, uploads, faithfulness, the page's set-up."""
from __future__ import annotations

import dataclasses
import datetime
import io

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
    assert explorer.progress.value == 2 and explorer.curves.value[:4] == b"\x89PNG"


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


def test_the_page_opens_at_the_thesis_a_with_the_predicted_a_beside_the_slider(toy, monkeypatch) -> None:
    bundle, _ = toy
    bundle = dataclasses.replace(bundle, name="efficientnet_lite0")  # the model results/hybrid_alpha.json is for
    monkeypatch.setattr(page, "StudyAlphaPredictor", lambda *a: lambda *b: 0.35)
    explorer = page.page_explorer(bundle=bundle)
    assert explorer.slider.value == THESIS_ALPHA == 0.7 and explorer.alpha == THESIS_ALPHA
    assert "predicted a = <b>0.35</b>" in explorer.predicted.value and explorer.predicted.layout.display is None
    assert explorer.captions[1].value == "<b>hybrid (a = 0.70)</b>"
    assert torch.equal(explorer.update(), explorer.fused(THESIS_ALPHA))


def test_a_forged_a_is_put_back_to_the_last_good_one_with_a_message(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image, alpha=0.4)
    good = explorer.pictures[1].value
    for forged in ({"value": float("nan")}, {"max": float("inf"), "value": float("inf")}, {"max": 10.0, "value": 5.0},
                   {"min": -1.0, "value": -0.5}):
        explorer.slider.set_state(forged)  # what a message from the page does
        assert explorer.slider.value == 0.4 and explorer.alpha == 0.4, forged
        assert "a must be a number in [0, 1]" in explorer.message.value and "kept a = 0.40" in explorer.message.value
        assert explorer.pictures[1].value == good and explorer.captions[1].value == "<b>hybrid (a = 0.40)</b>"
    explorer.slider.set_state({"min": 0.0, "max": 1.0, "value": 0.8})
    assert explorer.alpha == 0.8 and explorer.captions[1].value == "<b>hybrid (a = 0.80)</b>"
    with pytest.raises(ValueError, match="alpha"):
        HybridExplorer(bundle, image, alpha=float("nan"))


def test_a_forged_empty_photo_or_layer_choice_keeps_the_shown_one(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image)
    shown = [p.value for p in explorer.pictures]
    for widget in (explorer.photo, explorer.layer, explorer.dropdown):
        widget.set_state({"index": None})  # what a message from the page can send
    assert explorer.photo.value == explorer.current == GIVEN and explorer.layer.value == "features"
    assert [p.value for p in explorer.pictures] == shown and "layer features" in explorer.status.value


def test_an_upload_over_the_limit_is_refused_naming_its_size_and_one_at_it_is_read(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image)
    photo = png_bytes(Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()))
    at_limit = photo + b"\0" * (interactive.UPLOAD_LIMIT - len(photo))  # bytes after the PNG's end are ignored
    explorer.upload.value = upload("big.png", at_limit + b"\0")
    assert explorer.message.value.endswith(
        "upload refused: big.png is 33,554,433 bytes, over the 32 MiB limit (33,554,432 bytes)</span>")
    assert explorer.current == GIVEN and explorer.upload.value == ()  # the widget keeps no copy
    explorer.upload.value = upload("big.png", at_limit)
    assert explorer.message.value == "" and explorer.current == "upload: big.png" and explorer.upload.value == ()


def test_an_uploads_name_is_only_shown_and_a_second_upload_of_a_name_replaces_its_maps(toy) -> None:
    bundle, image = toy
    explorer = HybridExplorer(bundle, image)
    first, second = (Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()) for _ in range(2))
    for sent, shown in (("..", ".."), ("../../etc/x.png", "x.png"), ("C:\\temp\\y.png", "y.png"),
                        ("a\x00b\n.png", "ab.png"), ("", "upload")):
        explorer.upload.value = upload(sent, png_bytes(first))
        assert explorer.current == f"upload: {shown}" and explorer.message.value == "", sent
    explorer.upload.value = upload("mine.png", png_bytes(first))
    explorer.upload.value = upload("mine.png", png_bytes(second))  # the same name, another photo
    c = explorer.class_idx
    assert torch.equal(explorer.image, bundle.preprocess(second))
    expected = fused_maps(raw_maps(bundle, bundle.preprocess(second)[None], c), explorer.alpha, size=(8, 8))[0]
    assert torch.allclose(explorer.show_hybrid(), expected, atol=1e-6)


def test_photo_sources_are_the_packaged_photos_then_imagenet_when_present(tmp_path) -> None:
    packaged = page.photo_sources(tmp_path / "absent")
    assert list(packaged)[0] == "chelsea (tabby)" and len(packaged) == len(page.PHOTOS)
    assert packaged["coffee (espresso)"]().size == (600, 400)
    with_real = page.photo_sources(tmp_path)  # a folder is present: the manifest's photos are offered
    real = [k for k in with_real if k.startswith("ImageNet ")]
    assert len(real) == 800 and "ImageNet test: tench (0)" in real
    with pytest.raises(ImageLoadError, match="tench.JPEG: no such file"):
        with_real["ImageNet test: tench (0)"]()


def test_the_server_listens_on_localhost_only_on_its_port_and_culls_left_kernels() -> None:
    cmd = page.voila_command(8123)
    assert cmd[2:4] == ["helpers.teaching.explorer_server", str(page.NOTEBOOK)] and page.NOTEBOOK.is_file()
    assert {"--port=8123", "--Voila.port_retries=0", "--Voila.ip=127.0.0.1", "--Voila.open_browser=False",
            "--VoilaConfiguration.file_denylist=.*", "--VoilaConfiguration.show_tracebacks=False",
            "--MappingKernelManager.cull_idle_timeout=600", "--MappingKernelManager.cull_interval=60"} <= set(cmd)
    assert "--Voila.open_browser=True" in page.voila_command(8123, open_browser=True)
    assert {"--MappingKernelManager.cull_idle_timeout=5", "--MappingKernelManager.cull_interval=2"} <= set(
        page.voila_command(8123, idle_timeout=5))


def test_explore_refuses_an_idle_timeout_under_a_second(capsys, monkeypatch) -> None:
    from helpers import cli

    monkeypatch.setattr(page.os, "execve", lambda *a: pytest.fail("the server was started"))
    assert cli.main(["explore", "--kernel-idle-timeout", "0", "--no-browser"]) == 2
    assert capsys.readouterr().err == "error: --kernel-idle-timeout must be at least 1 second, got 0\n"


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
    port = page.free_port()  # check_port needs it free
    assert cli.main(["explore", "--port", str(port), "--model", "efficientnet_lite1"]) == 0
    [(exe, cmd, env)] = calls
    assert cmd == page.voila_command(port, open_browser=True, idle_timeout=600) and exe == cmd[0]
    assert env[page.MODEL_ENV] == "efficientnet_lite1" and env["PYTHONPATH"].split(page.os.pathsep)[0] == str(page.ROOT)
    assert capsys.readouterr().out.startswith(f"explorer: http://127.0.0.1:{port}/")
