"""Reading images and the dataset manifest.

:func:`load_image` is the project's ONLY image reader: every file goes through it, so every
notebook sees the same RGB conversion and the same rejections. :func:`load_samples` turns the
manifest (``input_images/manifest.csv``, written by ``1_create_dataset.ipynb`` or by
:func:`import_folder`) into preprocessed :class:`Sample` objects.

Conversions (documented choices):

* grayscale / 1-bit -> the gray value copied to R, G and B;
* RGBA, LA and palette images with transparency -> composited on WHITE (an ImageNet photo's
  background is more often light than black, and black would add strong false edges);
* 16-bit images (``I;16``, ``I``) -> 8-bit by ``round(v / 257)`` (65535 -> 255); 16-bit RGB PNGs
  are reduced to 8 bits by Pillow itself; 32-bit float (``F``) images are rejected (no agreed range);
* the EXIF orientation tag is applied, so a phone photo stands the way it was taken.

Rejections (:class:`ImageLoadError`, a ``ValueError`` naming the file and the reason): missing
file, not an image (e.g. a text file named ``.jpg``), corrupt or truncated data, a side shorter
than :data:`MIN_SIDE` pixels, or more than :data:`MAX_PIXELS` pixels (decompression-bomb guard,
checked from the header before any pixel is decoded).
"""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from ..cam.bundle import default_resize
from ..config import MANIFEST, write_atomic
from .restricted import note_read

#: Smallest accepted side in pixels: below this the model's resize-256 would invent almost
#: every pixel (a 32-pixel side is already an 8x upscale).
MIN_SIDE: int = 32
#: Largest accepted image in pixels (100 MP, about 300 MB once decoded as RGB): larger headers
#: are treated as decompression bombs and rejected before decoding.
MAX_PIXELS: int = 100_000_000
#: The model's preprocessing geometry (both models): centre crop 224 after the shorter side goes to 256
#: (:func:`helpers.cam.bundle.default_resize`, the one place the 256 -> 224 convention lives).
CROP: int = 224
RESIZE: int = default_resize(CROP)

MANIFEST_COLUMNS: tuple[str, ...] = ("file", "sha256", "source", "licence", "kind", "split",
                                     "label_idx", "label_name", "boxes", "top5")
SPLITS: tuple[str, ...] = ("val", "test")
KINDS: tuple[str, ...] = ("photo", "composite")

Box = tuple[float, float, float, float]


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module docstring for the choices)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    if im.mode.startswith("I"):
        gray = np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if im.mode == "F":
        raise ImageLoadError(f"{path}: unsupported pixel format F (32-bit float, no agreed value range)")
    try:
        return im.convert("RGB")
    except ValueError as err:
        raise ImageLoadError(f"{path}: cannot convert pixel format {im.mode} to RGB ({err})") from err


def load_image(path: str | Path, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image with its EXIF orientation applied.

    Raises :class:`ImageLoadError` naming ``path`` and the reason when the file is missing, is
    not an image, is corrupt or truncated, is smaller than ``min_side`` on a side or has more
    than ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(f"{path}: image too large ({w}x{h} = {w * h} pixels; "
                                         f"limit {max_pixels}, decompression-bomb guard)")
                if min(w, h) < min_side:
                    raise ImageLoadError(f"{path}: image too small ({w}x{h} px; minimum side {min_side} px)")
                im.load()
                image = _to_rgb(ImageOps.exif_transpose(im), path)
                note_read(path)                  # a licence-restricted photo marks the notebook cell
                return image
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"{path}: image too large (decompression-bomb guard: {err})") from err
    except Image.UnidentifiedImageError as err:
        raise ImageLoadError(f"{path}: not an image file (no known image format)") from err
    except Exception as err:  # decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageLoadError(f"{path}: corrupt or truncated image ({type(err).__name__}: {err})") from err


def load_images(paths: Iterable[str | Path], **kwargs: Any) -> tuple[dict[Path, Image.Image], list[str]]:
    """Load many files: ``({path: image} for the good ones, [rejection messages])``.

    One bad file never stops the others; each rejection's message names its file and reason.
    """
    images: dict[Path, Image.Image] = {}
    rejected: list[str] = []
    for path in paths:
        try:
            images[Path(path)] = load_image(path, **kwargs)
        except ImageLoadError as err:
            rejected.append(str(err))
    return images, rejected


def crop_geometry(size: tuple[int, int], resize: int = RESIZE, crop: int = CROP) -> tuple[float, float, int, int]:
    """``(scale_x, scale_y, left, top)`` of the model's resize-shorter-side + centre-crop.

    Mirrors torchvision: the longer side becomes ``int(resize * long / short)`` and the crop
    offset is ``int(round((new - crop) / 2))``.
    """
    w, h = size
    short, long = min(w, h), max(w, h)
    new_long = int(resize * long / short)
    new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
    return new_w / w, new_h / h, int(round((new_w - crop) / 2.0)), int(round((new_h - crop) / 2.0))


def to_crop_box(box: Sequence[float], size: tuple[int, int], resize: int = RESIZE, crop: int = CROP) -> Box:
    """A box ``(x0, y0, x1, y1)`` in original pixels of an image of ``size`` (w, h) mapped to the
    ``crop`` x ``crop`` model input, clipped to it. Raises ``ValueError`` if nothing is left."""
    sx, sy, left, top = crop_geometry(size, resize, crop)
    x0, y0, x1, y1 = (min(max(v, 0.0), float(crop)) for v in
                      (box[0] * sx - left, box[1] * sy - top, box[2] * sx - left, box[3] * sy - top))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(f"box {tuple(box)} of a {size[0]}x{size[1]} image lies outside the centre crop")
    return (round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2))


def model_view(image: Image.Image, resize: int = RESIZE, crop: int = CROP) -> Image.Image:
    """What the model sees of ``image`` (before normalisation): shorter side to ``resize``, centre
    ``crop`` x ``crop`` (torchvision's own functions, so it matches ``bundle.preprocess``)."""
    from torchvision.transforms import functional as F
    return F.center_crop(F.resize(image, resize), crop)


@dataclass
class Sample:
    """One preprocessed image of the manifest with its label and boxes."""

    file: str
    tensor: torch.Tensor
    label_idx: int
    label_name: str
    boxes_crop: list[tuple[int, Box]]
    kind: str
    split: str
    source: str
    #: Pasted objects whose classes were all required in the top-5 (2 for two-object composites).
    #: Other boxes (a background photo's own object) may add classes without counting here.
    n_objects: int = 1
    #: Crop pixels per original pixel (the resize's scale): distances stated in the original image's
    #: pixels, such as the pointing game's tolerance, are multiplied by it.
    crop_scale: float = 1.0


def read_manifest(path: str | Path = MANIFEST) -> pd.DataFrame:
    """The manifest as a DataFrame (all text columns as ``str``, ``label_idx`` as ``int``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset manifest; run 1_create_dataset.ipynb first "
                                "(or helpers.data.import_folder for your own images)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a dataset manifest, missing columns {missing}")
    return df.astype({"label_idx": int})


def parse_boxes(boxes_json: str, size: tuple[int, int] | None = None, resize: int = RESIZE,
                crop: int = CROP) -> list[tuple[int, Box]]:
    """The manifest's ``boxes`` JSON as ``[(class_idx, (x0, y0, x1, y1) in crop pixels), ...]``.

    With the image's ``size`` (w, h), each box's ``orig`` coordinates are mapped through the model's
    ``resize`` + centre ``crop`` (:func:`to_crop_box`), so a model with another input size gets its
    own crop boxes; a box left outside that crop is dropped. Without ``size``: the stored ``crop``
    coordinates (of the 256 -> 224 preprocessing).
    """
    boxes = []
    for b in json.loads(boxes_json):
        if size is None or "orig" not in b:
            boxes.append((int(b["class_idx"]), tuple(float(v) for v in b["crop"])))
            continue
        try:
            boxes.append((int(b["class_idx"]), to_crop_box(b["orig"], size, resize, crop)))
        except ValueError:  # outside what this model sees
            continue
    return boxes


def orig_size(text: str, stored: tuple[int, int]) -> tuple[int, int]:
    """The size (w, h) a manifest row's ``orig`` boxes are in: its ``orig_size`` ("WxH"), else ``stored``.

    A packaged photo is stored smaller than its original (coffee: 600 x 400 stored as 384 x 256) and
    its boxes are in the original's pixels; a composite's original is the stored image itself.
    """
    if not text:
        return stored
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"orig_size {text!r} is not WIDTHxHEIGHT") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"orig_size {text!r} is not WIDTHxHEIGHT")
    return w, h


def load_samples(bundle: Any, split: str | None = None, limit: int | None = None,
                 manifest: str | Path = MANIFEST, root: str | Path | None = None,
                 spread: bool = False, files: Sequence[str] | None = None) -> list[Sample]:
    """The manifest's images as :class:`Sample` objects, in manifest order (or in the order of ``files``).

    ``split`` selects ``"val"`` or ``"test"`` (None: all); ``limit`` keeps the first ``limit``
    rows (quick mode), or with ``spread`` ``limit`` rows evenly spaced over the selection (e.g.
    examples from many classes). File paths are relative to ``root`` (default: the manifest's
    folder). A file that fails to load is skipped and reported on stderr, never fatal. Boxes and
    ``crop_scale`` follow the bundle's own resize and crop (``resize_size``, ``input_size``; default
    256 and 224). ``files`` keeps only those manifest files, in that order (a file it lacks is an error).
    """
    df = read_manifest(manifest)
    if files is not None:
        unknown = sorted(set(files) - set(df["file"]))
        if unknown:
            raise ValueError(f"{manifest}: no row for {len(unknown)} file(s), e.g. {unknown[0]!r}")
        df = df.set_index("file", drop=False).loc[list(files)].reset_index(drop=True)
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        df = df[df["split"] == split]
    if limit is not None:
        df = df.iloc[np.linspace(0, len(df) - 1, min(limit, len(df))).round().astype(int)] if spread and len(df) \
            else df.head(limit)
    root = Path(root) if root is not None else Path(manifest).parent
    images, rejected = load_images(root / f for f in df["file"])
    if rejected:
        print(f"load_samples: skipped {len(rejected)} file(s):\n  " + "\n  ".join(rejected), file=sys.stderr)
    resize, crop = getattr(bundle, "resize_size", RESIZE), getattr(bundle, "input_size", CROP)

    def sample(row: Any, image: Image.Image) -> Sample:
        size = orig_size(getattr(row, "orig_size", ""), image.size)
        sx, sy, _, _ = crop_geometry(size, resize, crop)
        return Sample(file=row.file, tensor=bundle.preprocess(image), label_idx=int(row.label_idx),
                      label_name=row.label_name, boxes_crop=parse_boxes(row.boxes, size, resize, crop),
                      kind=row.kind, split=row.split, source=row.source,
                      n_objects=int(getattr(row, "n_objects", 1) or 1), crop_scale=min(sx, sy))
    return [sample(row, images[root / row.file]) for row in df.itertuples() if root / row.file in images]


def seeded_subset(samples: Sequence[Sample], n: int | None, seed: int) -> list[Sample]:
    """The first ``n`` samples of a seeded random order (all when ``n`` is None), in that order.

    Subsets of one seed are nested: the first 100 are among the first 200, so methods evaluated
    on fewer images are still paired with the others on exactly those images.
    """
    order = np.random.default_rng(seed).permutation(len(samples))
    return [samples[i] for i in order[:n]]


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest deterministically: the standard columns first, ``\\n`` line ends."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(MANIFEST_COLUMNS) + [c for c in df.columns if c not in MANIFEST_COLUMNS]
    write_atomic(path, df.loc[:, columns].to_csv(index=False, lineterminator="\n"))
    return path



# ---------------------------------------------------------------- top-5

def top5_of(bundle: Any, images: list[Image.Image], batch: int = 32) -> list[list[tuple[int, str, float]]]:
    """The model's top-5 ``(index, name, probability)`` for each PIL image, in batches."""
    from ..cam.inference import predict_topk
    from ..config import progress_bar
    out: list = []
    for start in progress_bar(range(0, len(images), batch), desc="top-5", leave=False, disable=len(images) <= batch):
        out += predict_topk(bundle, torch.stack([bundle.preprocess(im) for im in images[start:start + batch]]))
    return out
