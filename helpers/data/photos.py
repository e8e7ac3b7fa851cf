"""The real photos and textures that ship inside installed packages, with labels, boxes and licences.

Every entry is loaded with the network switched off (:func:`network_disabled`); an entry that
would need a download fails there and is reported, never fetched. Boxes were set by hand by
looking at each photo (``orig`` pixels of the photo exactly as the package ships it).
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
from PIL import Image

from .images import MIN_SIDE, RESIZE, Box, load_image, model_view


@dataclass(frozen=True)
class SourceSpec:
    """An image that ships inside an installed package, and how to load it."""

    id: str
    package: str
    loader: Callable[[], Image.Image]


@dataclass(frozen=True)
class PhotoSpec(SourceSpec):
    """One packaged photo: what we assert it shows, where, and under which licence."""

    label_idx: int
    label_name: str
    reason: str
    box: Box
    licence: str


@dataclass(frozen=True)
class TextureSpec(SourceSpec):
    """A packaged texture used only as a composite background (no ImageNet object)."""

    licence: str


def _skimage(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from skimage import data
        return Image.fromarray(getattr(data, name)()).convert("RGB")
    return load


def _skimage_motorcycle_left() -> Image.Image:
    from skimage import data
    return Image.fromarray(data.stereo_motorcycle()[0])


def _sklearn(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from sklearn.datasets import load_sample_image
        return Image.fromarray(load_sample_image(name))
    return load


def _matplotlib(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from matplotlib import cbook
        return load_image(Path(cbook.get_sample_data(name, asfileobj=False)))
    return load


_SKIMAGE = "scikit-image (skimage.data)"
_SKLEARN = "scikit-learn (sklearn.datasets.load_sample_image)"
_FLICKR_CC_BY = ("CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/), attribution required; "
                 "sklearn/datasets/images/README.txt: ")

PHOTOS: tuple[PhotoSpec, ...] = (
    PhotoSpec("chelsea", _SKIMAGE, _skimage("chelsea"), 281, "tabby",
              "brown striped coat with the 'M' mark on the forehead: a tabby (ImageNet's 'Egyptian cat' is a "
              "spotted breed)", (0, 0, 420, 300),
              "CC0 by the photographer (Stefan van der Walt), per skimage.data.chelsea"),
    PhotoSpec("coffee", _SKIMAGE, _skimage("coffee"), 967, "espresso",
              "a small cup with crema on a saucer: the drink is an espresso; the box is the cup",
              (172, 15, 412, 297), "CC0 by the photographer (Rachel Michetti), per skimage.data.coffee"),
    PhotoSpec("rocket", _SKIMAGE, _skimage("rocket"), 657, "missile",
              "a Falcon 9 rocket on its pad; ImageNet has no 'rocket' class and its 'missile' images are "
              "upright rockets", (302, 125, 340, 410),
              "public domain, captured by SpaceX (flickr spacexphotos/16511594820), per skimage.data.rocket"),
    PhotoSpec("astronaut", _SKIMAGE, _skimage("astronaut"), 812, "space shuttle",
              "ImageNet has no 'astronaut'; the one ImageNet object in the photo is the space shuttle model "
              "behind Eileen Collins", (355, 0, 472, 282),
              "public domain (NASA Great Images database, no known copyright restrictions), "
              "per skimage.data.astronaut"),
    PhotoSpec("camera", _SKIMAGE, _skimage("camera"), 872, "tripod",
              "the camera stands on a tripod; kept although grayscale (loaded as 3 equal channels): a real "
              "photo of an ImageNet object, and ImageNet itself holds grayscale photos", (228, 185, 408, 510),
              "CC0 by the photographer (Lav Varshney), per skimage.data.camera"),
    PhotoSpec("motorcycle_left", _SKIMAGE, _skimage_motorcycle_left, 665, "moped",
              "a light motorcycle; ImageNet has no 'motorcycle' class and 'moped' is the one that covers it",
              (92, 95, 690, 455),
              "Middlebury 2014 stereo data set (Scharstein et al., GCPR 2014), left view, "
              "per skimage.data.stereo_motorcycle"),
    PhotoSpec("china", _SKLEARN, _sklearn("china.jpg"), 698, "palace",
              "the Tower of Buddhist Incense at the Summer Palace in Beijing: ImageNet has no 'pagoda'; "
              "'palace' fits", (60, 28, 372, 392),
              _FLICKR_CC_BY + "china.jpg, 'Some rights reserved by danielbuechele', "
              "flickr.com/photos/danielbuechele/6061409035"),
    PhotoSpec("flower", _SKLEARN, _sklearn("flower.jpg"), 985, "daisy",
              "a dahlia; ImageNet's only garden-flower class is 'daisy' (a composite flower head like this)",
              (168, 85, 447, 360),
              _FLICKR_CC_BY + "flower.jpg, attribution given there as 'danielbuechele' but linked to "
              "flickr.com/photos/vultilion/6056698931"),
    PhotoSpec("grace_hopper", "matplotlib (matplotlib.cbook.get_sample_data)", _matplotlib("grace_hopper.jpg"),
              652, "military uniform",
              "Rear Admiral Grace Hopper in U.S. Navy dress uniform and cap; the box is the uniformed person",
              (10, 22, 512, 600),
              "matplotlib sample data; matplotlib states no provenance (an official U.S. Navy portrait, "
              "generally listed as public domain)"),
)

TEXTURES: tuple[TextureSpec, ...] = tuple(
    TextureSpec(name, _SKIMAGE, _skimage(name), f"CC0 (per skimage.data.{name})")
    for name in ("brick", "grass", "gravel"))


@contextmanager
def network_disabled() -> Iterator[None]:
    """Inside the block every socket connection fails, so nothing can be downloaded."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled while loading packaged images")
    original = socket.socket.connect
    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


def load_offline(specs: Sequence[SourceSpec], min_side: int = MIN_SIDE) -> tuple[dict[str, Image.Image], list[str]]:
    """Load every spec with the network off: ``({id: RGB image}, [why each skipped one failed])``."""
    images: dict[str, Image.Image] = {}
    skipped: list[str] = []
    with network_disabled():
        for spec in specs:
            try:
                image = spec.loader()
            except Exception as err:  # a missing package, a would-be download, a broken file
                skipped.append(f"{spec.id} ({spec.package}): not available offline ({type(err).__name__}: {err})")
                continue
            if min(image.size) < min_side:
                skipped.append(f"{spec.id}: too small {image.size}")
                continue
            images[spec.id] = image.convert("RGB")
    return images, skipped


def model_sized(image: Image.Image, resize: int = RESIZE) -> Image.Image:
    """The image resized so its shorter side is ``resize`` exactly as the model's preprocessing does
    it (so preprocessing the result gives the identical tensor: its resize becomes a no-op)."""
    from torchvision.transforms import functional as F
    return F.resize(image, resize)


def square_background(image: Image.Image, size: int = RESIZE) -> Image.Image:
    """The centre ``size`` x ``size`` square of ``image`` after resizing its shorter side to ``size``."""
    return model_view(image, size, size)


def photo_table(specs: tuple[PhotoSpec, ...] = PHOTOS) -> pd.DataFrame:
    """The photo specs as a table: id, asserted class, why, hand-set box, package, licence."""
    return pd.DataFrame([{"photo": s.id, "class": f"{s.label_name} ({s.label_idx})", "why this class": s.reason,
                          "box (orig px)": s.box, "package": s.package, "licence / provenance": s.licence}
                         for s in specs]).set_index("photo")
