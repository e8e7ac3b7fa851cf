"""Composite images with exact boxes: objects cut from photos, pasted onto backgrounds.

Composites are :data:`CANVAS` x :data:`CANVAS` (256 x 256): the model's resize-to-256 is then a
no-op and its centre crop removes a :data:`MARGIN`-pixel frame, so a box in canvas pixels maps to
the 224 x 224 model input by subtracting ``MARGIN`` -- exact, with no resampling. Objects are
placed fully inside that central window and never overlap each other or a background photo's own
object, so every recorded box is exactly what is visible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import CROP, RESIZE, Box

CANVAS: int = RESIZE
MARGIN: int = (RESIZE - CROP) // 2


@dataclass(frozen=True)
class Placed:
    """An object on a canvas: its source id, ImageNet class and box in canvas pixels."""

    source: str
    class_idx: int
    class_name: str
    box: Box


def plain_background(rng: np.random.Generator, size: int = CANVAS) -> Image.Image:
    """A uniform random colour."""
    return Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))


def noise_background(rng: np.random.Generator, size: int = CANVAS, cells: int = 6) -> Image.Image:
    """Smooth colour noise: a ``cells`` x ``cells`` random colour grid upsampled bicubically."""
    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((size, size), Image.BICUBIC)


def texture_background(texture: Image.Image, rng: np.random.Generator, size: int = CANVAS) -> Image.Image:
    """A random ``size`` x ``size`` window of a texture image."""
    w, h = texture.size
    x, y = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    return texture.crop((x, y, x + size, y + size)).convert("RGB")


def overlaps(a: Box, b: Box) -> bool:
    """Whether two boxes ``(x0, y0, x1, y1)`` share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def find_place(rng: np.random.Generator, size: tuple[int, int], taken: list[Box],
               tries: int = 100) -> Box | None:
    """A random box of ``size`` (w, h) inside the central window that overlaps none of ``taken``."""
    w, h = size
    for _ in range(tries):
        x = int(rng.integers(MARGIN, MARGIN + CROP - w + 1))
        y = int(rng.integers(MARGIN, MARGIN + CROP - h + 1))
        box = (float(x), float(y), float(x + w), float(y + h))
        if not any(overlaps(box, t) for t in taken):
            return box
    return None


def cut_box(photo: Image.Image, box: Box) -> Image.Image:
    """The ``box`` region of ``photo`` (box corners rounded to whole pixels)."""
    return photo.crop(tuple(int(round(v)) for v in box))


def scale_to(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` resized so its longer side is ``long_side`` pixels."""
    w, h = image.size
    f = long_side / max(w, h)
    return image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)


def compose(background: Image.Image, objects: list[tuple[Image.Image, Placed]]) -> Image.Image:
    """Paste each object image at its box's top-left corner on a copy of ``background``."""
    canvas = background.copy()
    for image, placed in objects:
        canvas.paste(image, (int(placed.box[0]), int(placed.box[1])))
    return canvas



def half_windows(sizes: list[tuple[int, int]]) -> list[Box]:
    """Two non-overlapping halves of the central window for two objects of ``sizes`` (w, h):
    side by side or one above the other, whichever lets the smaller object be larger."""
    m, c, h = float(MARGIN), float(CROP), CROP / 2
    layouts = [[(m, m, m + h, m + c), (m + h, m, m + c, m + c)], [(m, m, m + c, m + h), (m, m + h, m + c, m + c)]]

    def smallest_area(regions: list[Box]) -> float:
        return min(fit_scale(s, r) ** 2 * s[0] * s[1] for s, r in zip(sizes, regions, strict=True))
    return max(layouts, key=smallest_area)


def fit_scale(size: tuple[int, int], region: Box) -> float:
    """The largest scale at which an object of ``size`` fits inside ``region``."""
    return min((region[2] - region[0]) / size[0], (region[3] - region[1]) / size[1])


def fit_in(rng: np.random.Generator, size: tuple[int, int], region: Box, shrink: tuple[float, float] = (0.8, 1.0)
           ) -> tuple[tuple[int, int], Box]:
    """A random size (the largest fit times a factor in ``shrink``) and position inside ``region``:
    ``((w, h) to resize to, box)``."""
    f = fit_scale(size, region) * float(rng.uniform(*shrink))
    w, h = max(1, int(size[0] * f)), max(1, int(size[1] * f))
    x = int(rng.integers(int(region[0]), int(region[2]) - w + 1))
    y = int(rng.integers(int(region[1]), int(region[3]) - h + 1))
    return (w, h), (float(x), float(y), float(x + w), float(y + h))
