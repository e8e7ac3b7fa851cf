"""Your own image folders as a manifest: labels (CSV or class subfolders), class names, VOC boxes.

:func:`import_folder` turns a folder of images (class subfolders, or files named in a labels CSV,
optionally with Pascal VOC XML boxes) into the manifest format of :mod:`helpers.data.images`, so
:func:`helpers.data.images.load_samples` and every notebook read it. One class-name rule
(:func:`class_index`) holds for the labels CSV, the folder names, the box files and
``explain --class``.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import pandas as pd

from .images import MANIFEST_COLUMNS, SPLITS, Box, load_image, to_crop_box, top5_of, write_manifest

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_synsets(path: str | Path) -> dict[str, int]:
    """WordNet ids -> class index from an ImageNet ``LOC_synset_mapping.txt``-style file
    (one ``n01440764 tench, Tinca tinca`` line per class, in class order); a ValueError naming the
    file when it is not such a text file."""
    path = Path(path)
    try:
        lines = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ValueError(f"synsets file {path}: cannot be read as text ({reason})") from None
    return {wnid: i for i, wnid in enumerate(lines)}


def _class_key(name: str) -> str:
    """A class name as compared: case-insensitive, underscores as spaces, runs of spaces as one."""
    return " ".join(name.replace("_", " ").lower().split())


@functools.cache
def _imagenet() -> tuple[tuple[str, ...], Mapping[str, int]]:
    """The 1000 ImageNet class names (torchvision's) and WordNet id -> index (timm's metadata), offline."""
    from ..cam.zoo import imagenet_class_names
    from .imagenet import wnid_index
    return tuple(imagenet_class_names()), MappingProxyType(wnid_index())


def known_synsets(class_names: Sequence[str], synsets: Mapping[str, int] | None = None) -> Mapping[str, int]:
    """WordNet id -> class index: ``synsets`` when given, else ImageNet-1k's 1000 ids when ``class_names``
    are ImageNet's (every model here, and torchvision / timm ImageNet classifiers), else none."""
    if synsets is not None:
        return synsets
    names, wnids = _imagenet()
    return wnids if tuple(class_names) == names else {}


def class_index(label: str, class_names: Sequence[str], synsets: Mapping[str, int] | None = None) -> int:
    """A class index from an index (``"281"``), a name (``"tabby"``, ``"Egyptian_cat"``, ``"great grey
    owl"``, any case, underscores as spaces) or a WordNet id (``"n02123045"``): ImageNet's own for a
    model with ImageNet's classes (:func:`known_synsets`), those of ``synsets`` when given.

    The one rule of the labels CSV, class subfolders, box files and ``explain --class``. Names that
    differ only in case (ImageNet's "Cardigan" dog, 264, and "cardigan" sweater, 474) match the one
    written exactly so; any other spelling of them, and an index outside 0..N-1, is refused with a
    ValueError saying so.
    """
    text = str(label).strip()
    if text.lstrip("+-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(class_names):
            raise ValueError(f"class {idx} out of range: the model has {len(class_names)} classes "
                             f"(0..{len(class_names) - 1})")
        return idx
    looks_like_wnid = text[:1] == "n" and text[1:].isdigit()
    wnids = known_synsets(class_names, synsets) if looks_like_wnid or synsets is not None else {}
    if text in wnids:
        return wnids[text]
    hits = [i for i, name in enumerate(class_names) if _class_key(name) == _class_key(text)]
    if len(hits) > 1:   # names equal but for case: the one written exactly so wins
        hits = [i for i in hits if " ".join(class_names[i].split()) == " ".join(text.replace("_", " ").split())] or hits
    if len(hits) > 1:
        raise ValueError(f"class {label!r} is ambiguous: classes {', '.join(map(str, hits))} share the name; "
                         "give the index")
    if hits:
        return hits[0]
    hint = ""
    if looks_like_wnid:
        hint = (" nor a WordNet id of the synsets file" if synsets is not None else
                " nor an ImageNet-1k WordNet id" if wnids else
                " (the model's classes are not ImageNet's: a WordNet id needs synsets=LOC_synset_mapping.txt)")
    raise ValueError(f"unknown ImageNet class {label!r}: not one of the {len(class_names)} class names{hint}")


def read_voc_boxes(path: Path, class_names: Sequence[str], synsets: dict[str, int] | None = None
                   ) -> tuple[tuple[int, int] | None, list[tuple[int, Box]]]:
    """Image size and ``(class_idx, box)`` pairs from a Pascal VOC XML file (ImageNet's box format).

    VOC coordinates are 1-based and inclusive; boxes come back 0-based, half-open:
    ``(xmin - 1, ymin - 1, xmax, ymax)``.
    """
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    size = root.find("size")
    wh = (int(size.findtext("width")), int(size.findtext("height"))) if size is not None else None
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((class_index(obj.findtext("name"), class_names, synsets), (x0 - 1, y0 - 1, x1, y1)))
    return wh, boxes


def read_labels(path: str | Path) -> pd.DataFrame:
    """A labels CSV (columns ``file``, ``label``, optional ``split``; UTF-8 or UTF-16 with a byte-order
    mark) with every cell trimmed; a ValueError naming the file when it cannot be one."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"labels CSV {path}: is a folder, not a CSV file")
    if not path.is_file():
        raise ValueError(f"labels CSV {path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig")
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except UnicodeDecodeError as err:
        raise ValueError(f"labels CSV {path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); "
                         "save it as UTF-8") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ValueError(f"labels CSV {path}: not a CSV table ({' '.join(str(err).split())})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if not {"file", "label"} <= set(table.columns):
        raise ValueError(f"{path}: a labels CSV needs the columns 'file' and 'label'")
    return table.apply(lambda column: column.str.strip())


def _inside(root: Path, file: Path) -> bool:
    """Whether ``file`` (a path under ``root`` as written, ``..`` resolved but not links) lies in ``root``."""
    return Path(os.path.relpath(os.path.normpath(file), os.path.normpath(root))).parts[:1] != ("..",)


def _folder_entries(root: Path, labels_csv: str | Path | None, allow_outside: bool = False,
                    skip: Path | None = None) -> tuple[list[tuple[Path, str, str | None]], list[str]]:
    """``(image path, label, split or None)`` from a labels CSV or from class subfolders (files under
    ``skip``, an output folder inside them, are not images of the class), and the rows refused: a
    file outside ``root`` (unless ``allow_outside``). A file listed twice is kept once (its first
    row) with one warning on stderr."""
    if labels_csv is None:
        return [(p, folder.name, None) for folder in sorted(d for d in root.iterdir() if d.is_dir())
                for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
                and not (skip is not None and _inside(skip, p))], []
    table = read_labels(labels_csv)
    entries: dict[Path, tuple[Path, str, str | None]] = {}
    refused, repeated = [], []
    for r in table.to_dict("records"):
        file = Path(os.path.normpath(root / r["file"]))
        if not allow_outside and (Path(r["file"]).is_absolute() or not _inside(root, file)):
            refused.append(f"{r['file']}: outside the image folder {root} (allow it with --allow-outside)")
        elif file in entries:
            repeated.append(r["file"])
        else:
            entries[file] = (file, r["label"], r.get("split") or None)
    if repeated:
        print(f"import_folder: {labels_csv}: {len(repeated)} repeated row(s) ignored, each file is evaluated once "
              f"(first row kept): {', '.join(repeated[:5])}{' ...' if len(repeated) > 5 else ''}", file=sys.stderr)
    return list(entries.values()), refused


def import_folder(path: str | Path, labels_csv: str | Path | None = None, boxes_dir: str | Path | None = None,
                  synsets: str | Path | None = None, bundle: Any = None, split: str = "test",
                  licence: str = "user-supplied", out: str | Path | None = None,
                  relative_to: str | Path | None = None, allow_outside: bool = False) -> pd.DataFrame:
    """A user's image folder -> a manifest (written to ``out``, default ``path/manifest.csv``).

    Labels come from class subfolders (folder name = ImageNet class name or index) or from
    ``labels_csv`` (:func:`read_labels`; files relative to ``path``, names trimmed; a file outside
    ``path`` is refused unless ``allow_outside``; a repeated file is kept once, with a warning).
    The manifest's ``file`` column is relative to ``relative_to`` (default: the manifest's folder;
    pass ``path`` so that the paths, and the per-image seeds hashed from them, do not depend on
    where the manifest is written). Class names follow :func:`class_index`. Each image's ``source``
    is its path under ``path`` ('+' written %2B: it joins a composite's sources), so same-named
    files in two class folders are two source photos. Images in the manifest's own folder, when it
    lies inside a class folder (an output folder), are not imported.
    Optional Pascal VOC XML boxes: ``<stem>.xml`` in ``boxes_dir`` (default: next to the image);
    WordNet ids (labels or boxes) are ImageNet's for a model with ImageNet's classes; other models need
    ``synsets``. With a ``bundle`` the model's top-5 is recorded.
    A bad image, label or box file is skipped and reported (``df.attrs["rejected"]``, printed).
    """
    root = Path(path)
    out = Path(out) if out is not None else root / "manifest.csv"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    from ..cam.zoo import imagenet_class_names
    names = bundle.class_names if bundle is not None else imagenet_class_names()
    wnids = read_synsets(synsets) if synsets is not None else None
    base = Path(relative_to) if relative_to is not None else out.parent
    skip = None if out.parent.resolve() == root.resolve() else out.parent   # e.g. evaluate --out images/tabby/eval
    entries, rejected = _folder_entries(root, labels_csv, allow_outside, skip)
    rows, images = [], []
    for file, label, row_split in entries:
        try:
            idx = class_index(label, names, wnids)
            image = load_image(file)
            xml = (Path(boxes_dir) if boxes_dir is not None else file.parent) / f"{file.stem}.xml"
            voc_size, voc = read_voc_boxes(xml, names, wnids) if xml.is_file() else (None, [])
            if voc_size is not None and voc_size != image.size:
                raise ValueError(f"box file {xml.name} is for a {voc_size[0]}x{voc_size[1]} image, "
                                 f"the image is {image.size[0]}x{image.size[1]}")
            boxes = [{"class_idx": c, "class_name": names[c], "crop": list(to_crop_box(b, image.size)),
                      "orig": list(b)} for c, b in voc]
            if (row_split or split) not in SPLITS:
                raise ValueError(f"unknown split {row_split!r}")
        except Exception as err:  # one bad file, label or box never stops the others
            rejected.append(str(err) if str(file) in str(err) else f"{file}: {err}")
            continue
        rows.append({"file": Path(os.path.relpath(file, base)).as_posix(),
                     "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
                     "source": Path(os.path.relpath(file, root)).as_posix().replace("+", "%2B"),
                     "licence": licence, "kind": "photo", "split": row_split or split, "label_idx": idx,
                     "label_name": names[idx], "boxes": json.dumps(boxes), "top5": "[]",
                     "orig_size": f"{image.size[0]}x{image.size[1]}"})
        images.append(image)
    if bundle is not None and images:
        for row, t5 in zip(rows, top5_of(bundle, images), strict=True):
            row["top5"] = json.dumps([[i, n, round(p, 4)] for i, n, p in t5])
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + ["orig_size"])
    write_manifest(df, out)
    df.attrs["rejected"] = rejected
    if rejected:
        print(f"import_folder: skipped {len(rejected)} file(s):\n  " + "\n  ".join(rejected))
    return df
