"""Pictures: CAM overlays on photos and grids of them."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from ..data.restricted import note_shown


def to_rgb_array(image: Image.Image | np.ndarray | torch.Tensor, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> np.ndarray:
    """An (H, W, 3) float array in [0, 1] from a PIL image, a uint8/float array or a (3, H, W) tensor.

    A tensor in a model's normalised space is mapped back with ``mean`` and ``std``.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if mean is not None and std is not None:
            t = t * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
        return t.permute(1, 2, 0).clamp(0, 1).numpy()
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else np.clip(arr.astype(np.float64), 0, 1)


def overlay(image: Image.Image | np.ndarray | torch.Tensor, cam: np.ndarray | torch.Tensor, weight: float = 0.5,
            cmap: str = "jet", mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """Blend a [0, 1] map (H, W) coloured by ``cmap`` onto the image: (H, W, 3) floats in [0, 1]."""
    rgb = to_rgb_array(image, mean, std)
    heat = cam.detach().float().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam, dtype=np.float64)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"map shape {heat.shape} does not match image size {rgb.shape[:2]}")
    colour = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
    return (1 - weight) * rgb + weight * colour


#: The label of the colour bar shared by overlays (short enough for a two-panel figure).
COLOURBAR_LABEL = "map value, each map scaled to [0, 1]"
#: A map whose values differ by at most this (relative to its largest magnitude) is drawn as constant.
CONSTANT_TOLERANCE = 1e-9
#: A box covering at least this share of the image outlines the image itself and is not drawn.
WHOLE_IMAGE_SHARE = 0.98


def informative_boxes(boxes: Sequence[tuple[float, float, float, float]], height: int, width: int
                      ) -> list[tuple[float, float, float, float]]:
    """The boxes worth outlining on an image of ``height`` x ``width``: those that do not cover (nearly)
    all of it (a frame around the whole picture says nothing and hides its edge)."""
    return [b for b in boxes if (b[2] - b[0]) * (b[3] - b[1]) < WHOLE_IMAGE_SHARE * height * width]


def plot_cam_grid(images: Sequence, maps: Mapping[str, torch.Tensor], titles: Sequence[str] | None = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  path: str | Path | None = None, size: float = 2.4,
                  boxes: Sequence[Sequence[tuple[float, float, float, float]]] | None = None,
                  cmap: str = "jet") -> plt.Figure:
    """One row per image: the image, then one overlay per method (``boxes`` outlined unless they frame the
    whole image), and one colour bar for the overlays (every map is in [0, 1]). Saved to ``path`` if given."""
    names = list(maps)
    fig, axes = plt.subplots(len(images), len(names) + 1, figsize=(size * (len(names) + 1), size * len(images) + 0.6),
                             squeeze=False, layout="constrained")
    for i, image in enumerate(images):
        rgb = to_rgb_array(image, mean, std)
        axes[i, 0].imshow(rgb)
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=9)
        for j, name in enumerate(names, start=1):
            axes[i, j].imshow(overlay(image, maps[name][i], cmap=cmap, mean=mean, std=std))
            axes[i, j].set_title(name, fontsize=9)
        for ax in axes[i] if boxes else ():
            draw_boxes(ax, informative_boxes(boxes[i], *rgb.shape[:2]))
    for ax in axes.flat:
        ax.axis("off")
    if names:
        fig.colorbar(matplotlib.cm.ScalarMappable(cmap=cmap), ax=axes[:, 1:], orientation="horizontal",
                     fraction=0.04, aspect=40, label=COLOURBAR_LABEL)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def plot_overlays(image: Image.Image | np.ndarray | torch.Tensor, maps: Mapping[str, torch.Tensor],
                  title: str = "image", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  ncols: int = 4, size: float = 3.0, cmap: str = "jet") -> plt.Figure:
    """One image and many maps of it (H, W), wrapped into rows of ``ncols`` panels (the image first), with
    one colour bar: legible where a single row (:func:`plot_cam_grid`) would be a long strip."""
    panels = 1 + len(maps)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    flat = axes.flat
    first = next(flat)
    first.imshow(to_rgb_array(image, mean, std))
    first.set_title(title, fontsize=10)
    for ax, (name, cam) in zip(flat, maps.items(), strict=False):
        ax.imshow(overlay(image, cam, cmap=cmap, mean=mean, std=std))
        ax.set_title(name, fontsize=10)
    fig.colorbar(matplotlib.cm.ScalarMappable(cmap=cmap), ax=axes, orientation="horizontal", fraction=0.04,
                 aspect=40, label=COLOURBAR_LABEL)
    return fig


def plot_maps(maps: Mapping[str, np.ndarray | torch.Tensor], cmap: str = "viridis", size: float = 2.4,
              colorbar: bool = True, suptitle: str | None = None) -> plt.Figure:
    """A row of 2-D maps (e.g. channels, gradients, CAM steps), each with its own colour scale."""
    return plot_map_rows([maps], cmap, size, colorbar, suptitle)


#: Diverging colour maps: drawn centred on zero, so the sign of a value reads from its colour.
DIVERGING = frozenset({"RdBu", "RdBu_r", "bwr", "coolwarm", "seismic", "PiYG", "PRGn", "BrBG", "PuOr", "RdGy"})


def is_constant(arr: np.ndarray) -> bool:
    """Whether a map holds one value (up to :data:`CONSTANT_TOLERANCE` of its largest magnitude)."""
    return bool(np.ptp(arr) <= CONSTANT_TOLERANCE * max(float(np.abs(arr).max()), 1e-30))


def plot_map_rows(rows: Sequence[Mapping[str, np.ndarray | torch.Tensor]], cmap: str = "viridis", size: float = 2.4,
                  colorbar: bool = True, suptitle: str | None = None) -> plt.Figure:
    """A grid of 2-D maps, one row per mapping, each panel with its own colour scale and colour bar (centred on
    zero for a :data:`DIVERGING` colour map); a constant map is drawn as one flat grey with its value written
    on it, and gets no colour bar."""
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols, size * len(rows)), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for row_axes, maps in zip(axes, rows, strict=False):
        for ax, (title, m) in zip(row_axes, maps.items(), strict=False):
            arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
            ax.set_title(title, fontsize=8)
            if is_constant(arr):
                ax.imshow(np.full(arr.shape, 0.85), cmap="gray", vmin=0, vmax=1)
                ax.text(0.5, 0.5, f"constant\n{float(arr.flat[0]):.3g}", transform=ax.transAxes, ha="center",
                        va="center", fontsize=8)
                continue
            span = float(np.abs(arr).max()) if cmap in DIVERGING else None     # signed maps: zero is white
            im = ax.imshow(arr, cmap=cmap, vmin=None if span is None else -span, vmax=span)
            if colorbar:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_grids(grids: Mapping[str, np.ndarray | torch.Tensor], fmt: str = ".2f", cmap: str = "viridis",
               size: float = 2.6, suptitle: str | None = None, fontsize: float = 9,
               label: str = "value") -> plt.Figure:
    """Small maps (h, w) side by side with every cell's value written on it (``fontsize`` points, titles one
    point larger), all on one colour scale from the smallest to the largest value shown (centred on zero for
    a :data:`DIVERGING` colour map), its colour bar labelled ``label``: maps as numbers, before any upsampling."""
    arrays = {k: (m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)) for k, m in grids.items()}
    lo, hi = min(float(a.min()) for a in arrays.values()), max(float(a.max()) for a in arrays.values())
    if cmap in DIVERGING:                  # signed values: zero in the middle of the scale
        lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
    fig, axes = plt.subplots(1, len(arrays), figsize=(size * len(arrays), size + 0.5), squeeze=False,
                             layout="constrained")
    for ax, (title, arr) in zip(axes[0], arrays.items(), strict=True):
        im = ax.imshow(arr, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=fontsize + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        for (i, j), v in np.ndenumerate(arr):
            dark = abs(v) > 0.6 * hi if cmap in DIVERGING else v < lo + 0.5 * (hi - lo)
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black")
    fig.colorbar(im, ax=axes, orientation="horizontal", fraction=0.05, aspect=50, label=label)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def preview(path: str | Path, width: int = 900, quality: int = 80):
    """A saved figure as a JPEG of at most ``width`` pixels, for a light notebook display."""
    from io import BytesIO

    from IPython.display import Image as IPyImage

    note_shown(path)                       # a figure of licence-restricted photos marks the cell
    image = Image.open(path).convert("RGB")
    image.thumbnail((width, width * 10))
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return IPyImage(data=buffer.getvalue(), format="jpeg")


def plot_bars(values: np.ndarray | torch.Tensor, labels: Sequence[str], title: str = "",
              xlabel: str = "") -> plt.Figure:
    """Horizontal bar chart of ``values`` (largest on top)."""
    vals = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(vals) + 1))
    ax.barh(range(len(vals))[::-1], vals, color=["tab:red" if v < 0 else "tab:blue" for v in vals])
    ax.set_yticks(range(len(vals))[::-1], labels, fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def draw_boxes(ax: plt.Axes, boxes: Sequence[tuple[float, float, float, float]], color: str = "lime") -> None:
    """Outline (x0, y0, x1, y1) boxes in pixel coordinates on an axis."""
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=1.5))
