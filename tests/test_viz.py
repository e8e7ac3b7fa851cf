"""Pictures: overlays blend correctly, grids and example pages are written."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch

from helpers.examples import save_examples
from helpers.viz import overlay, plot_bars, plot_maps, to_rgb_array


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


def test_save_examples_writes_one_page_per_chunk(lite0, photo_batch, tmp_path) -> None:
    samples = [SimpleNamespace(tensor=t, label_idx=c, label_name=lite0.class_names[c], file=f"img{i}.png",
                               boxes_crop=[(c, (10.0, 20.0, 100.0, 120.0))])
               for i, (t, c) in enumerate(zip(photo_batch, [967, 281, 657]))]
    paths = save_examples(lite0, samples, ("gradcam", "hybrid"), tmp_path / "ex", per_figure=2, progress=False)
    assert [p.name for p in paths] == ["examples_00.png", "examples_01.png"] and all(p.stat().st_size > 0 for p in paths)
