"""Pictures: overlays blend correctly, grids carry colour bars (none on constant maps), example pages are written."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from toy import GapLinear, toy_bundle

from helpers.cam.engine import compute_cams
from helpers.data.images import MANIFEST_COLUMNS
from helpers.teaching import examples
from helpers.teaching.examples import packaged_photos, photo_licences, save_examples, two_object_sample
from helpers.teaching.viz import (
    informative_boxes,
    overlay,
    plot_bars,
    plot_cam_grid,
    plot_map_rows,
    plot_maps,
    plot_overlays,
    preview,
    to_rgb_array,
)


def test_overlay_blends_image_and_colormap() -> None:
    img = np.full((4, 5, 3), 255, np.uint8)
    cam = np.linspace(0, 1, 20).reshape(4, 5)
    assert np.allclose(overlay(img, cam, weight=0.0), 1.0)
    assert np.allclose(overlay(img, cam, weight=1.0), matplotlib.colormaps["jet"](cam)[..., :3])
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, np.zeros((3, 3)))


def test_to_rgb_array_undoes_normalisation() -> None:
    rgb = torch.rand(3, 6, 6)
    normalised = (rgb - 0.5) / 0.5
    assert np.allclose(to_rgb_array(normalised, (0.5,) * 3, (0.5,) * 3), rgb.permute(1, 2, 0).numpy(), atol=1e-6)


def test_plots_build(tmp_path) -> None:
    assert len(plot_maps({"a": torch.rand(3, 3), "b": np.eye(3)}).axes) == 4  # two panels + colour bars
    assert len(plot_bars(np.array([2.0, -1.0]), ["x", "y"]).axes[0].patches) == 2
    grid = plot_map_rows([{"a": np.eye(2), "b": np.eye(2)}, {"c": np.eye(2)}], colorbar=False)
    assert [ax.get_title() for ax in grid.axes] == ["a", "b", "c", ""]
    grid.savefig(tmp_path / "g.png")
    shown = preview(tmp_path / "g.png", width=100)
    assert shown.format == "jpeg" and shown.data[:2] == b"\xff\xd8"


def test_a_constant_map_is_drawn_flat_with_its_value_and_no_colour_bar() -> None:
    fig = plot_map_rows([{"flat": np.full((3, 3), 0.25), "varies": np.eye(3)}])
    flat, varies, *bars = fig.axes
    assert len(bars) == 1 and bars[0].get_label() == "<colorbar>"   # only the varying map has one
    shown = flat.get_images()[0].get_array()
    assert np.ptp(shown) == 0 and [t.get_text() for t in flat.texts] == ["constant\n0.25"]
    assert np.array_equal(varies.get_images()[0].get_array(), np.eye(3)) and not varies.texts


def test_cam_grid_has_one_colour_bar_and_no_frame_around_the_whole_image() -> None:
    image, cam = torch.rand(3, 20, 20), torch.rand(1, 20, 20)
    assert informative_boxes([(0, 0, 20, 20), (2, 3, 10, 12)], 20, 20) == [(2, 3, 10, 12)]
    fig = plot_cam_grid([image], {"a": cam, "b": cam}, boxes=[[(0.0, 0.0, 20.0, 20.0), (2.0, 3.0, 10.0, 12.0)]])
    panels, bars = fig.axes[:3], fig.axes[3:]
    assert len(bars) == 1 and bars[0].get_label() == "<colorbar>"
    assert bars[0].get_xlim() == (0.0, 1.0)          # the bar spans map values 0 to 1
    assert all(len(ax.patches) == 1 for ax in panels)  # the whole-image box is left out, the other drawn
    assert fig.axes[1].get_images()[0].get_array().shape == (20, 20, 3)


def test_save_examples_writes_one_page_per_chunk(lite0, photo_batch, tmp_path, monkeypatch) -> None:
    samples = [SimpleNamespace(tensor=t, label_idx=c, label_name=lite0.class_names[c], file=f"img{i}.png",
                               boxes_crop=[(c, (10.0, 20.0, 100.0, 120.0))])
               for i, (t, c) in enumerate(zip(photo_batch, [967, 281, 657], strict=True))]
    paths = save_examples(lite0, samples, ("gradcam", "hybrid"), tmp_path / "ex", per_figure=2, progress=False)
    assert [p.name for p in paths] == ["examples_00.png", "examples_01.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    extra = {"layercam, 2 layers": {"methods": ("layercam",), "layer": ["stages.5", "head"]}}
    fig_calls = []
    monkeypatch.setattr(examples, "plot_cam_grid", lambda images, maps, *a, **k: fig_calls.append(maps) or plt.figure())
    save_examples(lite0, samples[:1], ("gradcam",), tmp_path / "ex2", progress=False, extra=extra)
    assert list(fig_calls[0]) == ["gradcam", "layercam, 2 layers"]
    fused = compute_cams(lite0, photo_batch[:1], ("layercam",), target=967, layer=["stages.5", "head"])["layercam"]
    assert torch.allclose(fig_calls[0]["layercam, 2 layers"], fused)


def test_two_object_sample_needs_two_classes() -> None:
    one = SimpleNamespace(boxes_crop=[(3, (0, 0, 1, 1)), (3, (2, 2, 3, 3))])
    two = SimpleNamespace(boxes_crop=[(3, (0, 0, 1, 1)), (5, (2, 2, 3, 3))])
    assert two_object_sample([one, two]) is two
    # toy: class k's logit is the mean of channel k, so the best pair is the one whose weaker class is brightest
    bundle = toy_bundle(GapLinear(torch.eye(6, 3)))
    boxes = [(0, (0, 0, 1, 1)), (1, (1, 1, 2, 2))]
    weak = SimpleNamespace(boxes_crop=boxes, tensor=torch.tensor([5.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 2, 2))
    both = SimpleNamespace(boxes_crop=boxes, tensor=torch.tensor([3.0, 3.0, 0.0]).view(3, 1, 1).expand(3, 2, 2))
    assert two_object_sample([weak, both, one], bundle) is both and two_object_sample([weak, one]) is weak
    with pytest.raises(ValueError, match="two different classes"):
        two_object_sample([one])


def test_packaged_photos_and_their_licences(tmp_path) -> None:
    def sample(file, kind, split):
        return SimpleNamespace(file=file, kind=kind, split=split)

    samples = [sample("a.png", "photo", "test"), sample("b.png", "composite", "test"), sample("c.png", "photo", "val")]
    assert [s.file for s in packaged_photos(samples)] == ["a.png"]
    manifest = tmp_path / "manifest.csv"
    table = pd.DataFrame({c: ["x", "x"] for c in MANIFEST_COLUMNS})
    table[["file", "licence", "label_idx"]] = [["a.png", "a: CC0", 1], ["c.png", "c: CC BY 2.0", 2]]
    table.to_csv(manifest, index=False)
    assert photo_licences(packaged_photos(samples, "val") + packaged_photos(samples), manifest) == (
        "c.png: c: CC BY 2.0\na.png: a: CC0")
    with pytest.raises(ValueError, match="no licence recorded for \\['b.png'\\]"):
        photo_licences(samples[:2], manifest)


def test_overlays_wrap_into_rows_with_one_colour_bar() -> None:
    image, maps = torch.rand(3, 6, 6), {f"layer {i}": torch.rand(6, 6) for i in range(6)}
    fig = plot_overlays(image, maps, title="photo", ncols=4)
    panels, bars = fig.axes[:8], fig.axes[8:]
    assert len(bars) == 1 and bars[0].get_label() == "<colorbar>"
    assert [ax.get_title() for ax in panels] == ["photo", *maps, ""]   # 7 panels in 2 rows of 4, the last empty
    assert np.allclose(panels[2].get_images()[0].get_array(), overlay(image, maps["layer 1"]))
    assert not panels[7].get_images()


def test_a_diverging_colour_map_is_centred_on_zero() -> None:
    signed = np.array([[-1.0, 0.0], [2.0, 3.0]])
    fig = plot_maps({"signed": signed, "positive": signed + 2}, cmap="RdBu_r")
    assert [ax.images[0].get_clim() for ax in fig.axes if ax.images][:2] == [(-3.0, 3.0), (-5.0, 5.0)]
    plain = plot_maps({"signed": signed})                       # a sequential map keeps the data's range
    assert plain.axes[0].images[0].get_clim() == (-1.0, 3.0)


def test_plot_grids_writes_every_value() -> None:
    import torch

    from helpers.teaching.viz import plot_grids
    fig = plot_grids({"a": torch.tensor([[0.0, -0.5], [1.0, 0.25]]), "b": torch.ones(2, 2)}, cmap="RdBu_r")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.00", "-0.50", "1.00", "0.25"] and len(fig.axes[1].texts) == 4


def test_plot_grids_font_and_label() -> None:
    import torch

    from helpers.teaching.viz import plot_grids
    fig = plot_grids({"m": torch.tensor([[0.125, 1.0]])}, fmt=".3f", fontsize=11, label="map value")
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.125", "1.000"]
    assert {t.get_fontsize() for t in fig.axes[0].texts} == {11} and fig.axes[0].title.get_fontsize() == 12
    assert fig.axes[-1].get_xlabel() == "map value"
