"""Real ImageNet photos (800, one per class): locating, verifying, downloading, their manifest and samples.

The photos are never part of the repository (ImageNet's terms allow non-commercial research and
teaching use only, no redistribution). They are read from where they are:

1. ``root`` if given, else ``$XAI_IMAGENET_SAMPLE``, else ``../shared/data/imagenet-sample``
   beside the repository (:data:`helpers.config.IMAGENET_SAMPLE_DEFAULT`); every file is checked
   against the packaged checksum list (``imagenet_sample.sha256``, a copy of the dataset's
   ``SHA256SUMS``);
2. where that folder does not exist, the same files are downloaded with pooch from the source
   repository at a fixed commit (:data:`BASE_URL`) into a cache folder (``$XAI_DATA_CACHE``, default
   ``pooch.os_cache("xai-cam")``), each file checked against its sha256 before it is kept;
3. where that fails too (offline), :class:`DatasetUnavailable` says in one message what is
   missing and where to put it, and :func:`available_dataset` tells callers to fall back to the
   packaged photos (``input_images/manifest.csv``).

The manifest (``input_images/imagenet_manifest.csv``, committed) uses the standard columns of
:mod:`helpers.data.images` plus ``wnid`` and ``orig_size``; its ``file`` is relative to the
dataset folder, so :func:`load_imagenet_samples` reads the photos from there, never from
``input_images/``. Real photos have no boxes (``boxes`` is ``[]``).
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pooch

from ..config import (
    DATA_CACHE_ENV,
    IMAGENET_MANIFEST,
    IMAGENET_SAMPLE_DEFAULT,
    IMAGENET_SAMPLE_ENV,
    MANIFEST,
    ROOT,
    SEED,
    progress_bar,
)
from .dataset import assign_splits
from .images import Sample, load_image, load_samples, top5_of, write_manifest
from .restricted import register_root

SOURCE_REPO = "EliSchwartz/imagenet-sample-images"
SOURCE_COMMIT = "bc69043e2862758a1906c6a24a792bb28c6bb2ff"
#: Download address of the files (``BASE_URL + file name``), pinned to the commit above.
BASE_URL = f"https://raw.githubusercontent.com/{SOURCE_REPO}/{SOURCE_COMMIT}/"
LICENCE = ("ImageNet terms of access: non-commercial research and educational use only; photos belong to "
           "their authors; not redistributed")
#: The packaged checksum list: ``<sha256>  <file name>`` per photo.
REGISTRY = Path(__file__).with_name("imagenet_sample.sha256")
#: Photos per split (seeded; one photo per class, so the splits are disjoint by class).
SPLIT_SIZES: dict[str, int] = {"val": 200, "test": 600}
#: Names :func:`available_dataset` returns.
IMAGENET, PACKAGED = "imagenet-sample", "packaged"
#: Published ImageNet-validation top-1 accuracy of EfficientNet-Lite0 (TF Lite model card).
LITE0_PUBLISHED_TOP1 = 0.751


class DatasetUnavailable(RuntimeError):
    """The real photos are neither at the configured folder nor downloadable; the message says what to do."""


class ChecksumError(ValueError):
    """A file whose sha256 differs from the checksum list (or that is missing); the message names it."""


def read_checksums(path: str | Path = REGISTRY) -> dict[str, str]:
    """``{file name: sha256}`` from a ``sha256sum``-style list (``<hex>  <name>`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checksum list")
    sums = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            digest, _, name = line.strip().partition(" ")
            name = name.strip().lstrip("*")
            if len(digest) != 64 or not name:
                raise ValueError(f"{path}, line {n}: not '<sha256>  <file name>': {line!r}")
            sums[name] = digest.lower()
    return sums


def _signature(root: Path, names: Sequence[str]) -> tuple:
    """Size and modification time of each listed file (None where missing): what a verified folder keeps."""
    stats = [(root / n).stat() if (root / n).is_file() else None for n in names]
    return tuple((n, s.st_size, s.st_mtime_ns) if s else (n, None) for n, s in zip(names, stats, strict=True))


#: Folders verified in this process: (folder, checksums) -> the files' sizes and mtimes then. A later
#: call re-hashes only when a file changed since (or the list differs), not 800 photos every time.
_VERIFIED: dict[tuple[Path, tuple], tuple] = {}


def verify(root: str | Path, checksums: dict[str, str] | None = None, progress: bool = True) -> Path:
    """Check every listed file in ``root`` against its sha256; :class:`ChecksumError` names the bad files.

    Hashes once per process: while no file's size or modification time has changed since a
    verified pass, the folder counts as verified without reading the files again."""
    root = Path(root)
    checksums = read_checksums() if checksums is None else checksums
    key = (root.resolve(), tuple(sorted(checksums.items())))
    signature = _signature(root, sorted(checksums))
    if _VERIFIED.get(key) == signature:
        return root
    missing, changed = [], []
    for name, digest in progress_bar(checksums.items(), desc="verifying photos", disable=not progress, leave=False):
        path = root / name
        if not path.is_file():
            missing.append(f"{path}")
        elif (got := pooch.file_hash(str(path), alg="sha256")) != digest:
            changed.append(f"{path}: sha256 {got} differs from the listed {digest}")
    if missing or changed:   # one line (the command line shows only the first): the counts and the first of each
        said = [f"{len(found)} {what} (first: {found[0]})" for what, found in (("missing", missing),
                                                                              ("changed", changed)) if found]
        raise ChecksumError(f"{len(missing) + len(changed)} of {len(checksums)} photos in {root} fail verification: "
                            + "; ".join(said))
    _VERIFIED[key] = signature
    return root


def configured_root(root: str | Path | None = None) -> Path:
    """The dataset folder: ``root``, else ``$XAI_IMAGENET_SAMPLE`` (relative to the repository root), else the
    default."""
    chosen = root if root is not None else os.environ.get(IMAGENET_SAMPLE_ENV) or IMAGENET_SAMPLE_DEFAULT
    path = Path(chosen).expanduser()
    return register_root(path if path.is_absolute() else ROOT / path)     # its photos are licence-restricted


def download_dir(cache: str | Path | None = None) -> Path:
    """Where missing photos are downloaded: ``cache``, else ``$XAI_DATA_CACHE``, else the user's cache folder
    (``pooch.os_cache("xai-cam")``, e.g. ``~/.cache/xai-cam``); the photos go to ``imagenet-sample/`` in it."""
    chosen = cache if cache is not None else os.environ.get(DATA_CACHE_ENV) or pooch.os_cache("xai-cam")
    return register_root(Path(chosen).expanduser() / IMAGENET)


def _download(url: str, output_file: str, fetcher: pooch.Pooch) -> None:
    """pooch's downloader for http(s), and a plain copy for ``file://`` addresses (local mirrors, tests)."""
    if not url.startswith("file:"):
        pooch.HTTPDownloader(timeout=30)(url, output_file, fetcher)
        return
    with urllib.request.urlopen(url) as response, open(output_file, "wb") as out:
        shutil.copyfileobj(response, out)


def registry(dest: Path, checksums: dict[str, str], base_url: str = BASE_URL) -> pooch.Pooch:
    """The photos as a pooch registry: ``base_url + name`` downloaded into ``dest``, each sha256-checked."""
    return pooch.create(path=dest, base_url=base_url, registry={n: f"sha256:{d}" for n, d in checksums.items()},
                        urls={n: base_url + urllib.request.pathname2url(n) for n in checksums})


def download(dest: str | Path, checksums: dict[str, str] | None = None, base_url: str = BASE_URL,
             progress: bool = True) -> Path:
    """Download every listed file missing from ``dest`` (``base_url + name``) with pooch, each sha256-checked.

    Files already there with the right sha256 are kept. A network failure raises
    :class:`DatasetUnavailable` at the first file that cannot be fetched; a checksum mismatch
    raises :class:`ChecksumError` naming the file (nothing of it is kept).
    """
    dest = Path(dest)
    checksums = read_checksums() if checksums is None else checksums
    fetcher = registry(dest, checksums, base_url)
    todo = [n for n, d in checksums.items() if not ((dest / n).is_file() and pooch.file_hash(str(dest / n)) == d)]
    logger = pooch.get_logger()
    level, _ = logger.level, logger.setLevel("WARNING")   # no line per file: the bar says it
    try:
        for name in progress_bar(todo, desc=f"downloading {len(todo)} photos", disable=not progress or not todo):
            try:
                fetcher.fetch(name, downloader=_download)
            except ValueError as err:   # pooch: the hash of the downloaded file differs (the file is not kept)
                raise ChecksumError(f"{fetcher.get_url(name)}: downloaded file's sha256 differs from the listed "
                                    f"{checksums[name]}; not kept") from err
            except OSError as err:   # urllib's URLError and requests' errors are OSErrors
                raise DatasetUnavailable(f"could not download {fetcher.get_url(name)} ({err})") from err
    finally:
        logger.setLevel(level)
    return dest


def unavailable_message(root: Path, cache: Path, n_missing: int, n_total: int, reason: str) -> str:
    """The one message of an offline failure: what is missing, where to put it, what happens instead."""
    return (f"The real ImageNet photos are not available: {n_missing} of {n_total} files missing.\n"
            f"  Put the folder imagenet-sample (the photos and SHA256SUMS, see its PROVENANCE.md) at {root},\n"
            f"  or set {IMAGENET_SAMPLE_ENV}=/path/to/imagenet-sample. The download from {SOURCE_REPO} "
            f"(commit {SOURCE_COMMIT[:12]}) into {cache} failed: {reason}.\n"
            f"  Notebooks fall back to the packaged photos (input_images/manifest.csv).")


def locate(root: str | Path | None = None, download_missing: bool = True, cache: str | Path | None = None,
           checksums: dict[str, str] | None = None, base_url: str = BASE_URL, progress: bool = True) -> Path:
    """The folder holding every photo, verified (see the module docstring for the order of places).

    Raises :class:`ChecksumError` when a present file is wrong (never silently re-downloaded) and
    :class:`DatasetUnavailable` when the folder is absent and the download fails or is not allowed.
    """
    checksums = read_checksums() if checksums is None else checksums
    folder = configured_root(root)
    if folder.is_dir():
        return verify(folder, checksums, progress)
    target = download_dir(cache)
    if not download_missing:
        n_missing = sum(not (target / n).is_file() for n in checksums)
        if n_missing == 0:
            return verify(target, checksums, progress)
        raise DatasetUnavailable(unavailable_message(folder, target, n_missing, len(checksums),
                                                     "downloads were not allowed"))
    try:
        download(target, checksums, base_url, progress)
    except DatasetUnavailable as err:
        n_missing = sum(not (target / n).is_file() for n in checksums)
        raise DatasetUnavailable(unavailable_message(folder, target, n_missing, len(checksums), str(err))) from err
    return target


def available_dataset(root: str | Path | None = None, download_missing: bool = True, **kwargs: Any) -> str:
    """:data:`IMAGENET` when the real photos can be had (locally or by download), else :data:`PACKAGED`
    (after printing why). A checksum mismatch is still an error: wrong data is never used quietly."""
    try:
        locate(root, download_missing, **kwargs)
    except DatasetUnavailable as err:
        print(err)
        return PACKAGED
    return IMAGENET


# ---------------------------------------------------------------- the manifest

def wnid_index() -> dict[str, int]:
    """ImageNet-1k WordNet id -> class index (position in the sorted list of the 1000 wnids,
    the order of torchvision's class names), from timm's packaged ImageNet metadata."""
    from timm.data import ImageNetInfo
    wnids = ImageNetInfo().label_names()
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1k wnid list is not the 1000 sorted wnids")
    return {w: i for i, w in enumerate(wnids)}


def parse_name(file: str) -> tuple[str, str]:
    """``"n01440764_tench.JPEG"`` -> ``("n01440764", "tench")`` (the file name's wnid and class name)."""
    stem = Path(file).stem
    wnid, _, name = stem.partition("_")
    if not (wnid.startswith("n") and wnid[1:].isdigit() and name):
        raise ValueError(f"{file}: not '<wnid>_<class name>.<ext>'")
    return wnid, name.replace("_", " ")


def label_table(checksums: dict[str, str], class_names: Sequence[str], seed: int = SEED) -> pd.DataFrame:
    """One row per photo without the model's top-5: file, sha256, wnid, label, source, licence, seeded split.

    The class index is the wnid's position in the sorted wnids; the class name it gives in
    ``class_names`` must equal the name in the file name (any mismatch is an error naming the file).
    """
    index = wnid_index()
    files = sorted(checksums)
    if sum(SPLIT_SIZES.values()) != len(files):
        raise ValueError(f"the splits {SPLIT_SIZES} need {sum(SPLIT_SIZES.values())} photos, the list has {len(files)}")
    splits = assign_splits(files, SPLIT_SIZES["val"], seed)
    rows = []
    for file in files:
        wnid, name = parse_name(file)
        if wnid not in index:
            raise ValueError(f"{file}: {wnid} is not an ImageNet-1k class")
        idx = index[wnid]
        if class_names[idx].lower() != name.lower():
            raise ValueError(f"{file}: class {idx} is {class_names[idx]!r} in the model's class list, "
                             f"the file name says {name!r}")
        rows.append({"file": file, "sha256": checksums[file], "source": f"{SOURCE_REPO}@{SOURCE_COMMIT[:12]}/{file}",
                     "licence": LICENCE, "kind": "photo", "split": splits[file], "label_idx": idx,
                     "label_name": class_names[idx], "boxes": "[]", "top5": "[]", "wnid": wnid})
    return pd.DataFrame(rows)


def build_imagenet_manifest(bundle: Any, root: str | Path | None = None, out: str | Path | None = IMAGENET_MANIFEST,
                            limit: int | None = None, batch: int = 32, seed: int = SEED, **locate_kwargs: Any
                            ) -> pd.DataFrame:
    """The real-photo manifest with the model's top-5 of every photo, written to ``out`` (None: not written).

    ``limit`` scores only the first ``limit`` photos (quick mode); such a partial table is never
    written. The splits do not depend on ``limit``.
    """
    if limit is not None and out is not None:
        raise ValueError("a partial manifest (limit) is never written; pass out=None")
    folder = locate(root, **locate_kwargs)
    df = label_table(read_checksums(), bundle.class_names, seed)
    if limit is not None:
        df = df.head(limit).copy()
    top5, sizes = [], []
    for start in progress_bar(range(0, len(df), batch), desc="top-5 of the photos", disable=len(df) <= batch):
        images = [load_image(folder / f) for f in df["file"].iloc[start:start + batch]]
        sizes += [f"{im.size[0]}x{im.size[1]}" for im in images]
        top5 += [json.dumps([[i, n, round(p, 4)] for i, n, p in t]) for t in top5_of(bundle, images, batch)]
    df["top5"], df["orig_size"] = top5, sizes
    if out is not None:
        write_manifest(df, out)
    return df


def accuracy(manifest: pd.DataFrame) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the manifest's recorded top-5 against its labels, and n."""
    hits = [[i for i, _, _ in json.loads(t)] for t in manifest["top5"]]
    labels = manifest["label_idx"].astype(int).tolist()
    n = len(labels)
    return {"n": n, "top1": sum(h[:1] == [y] for h, y in zip(hits, labels, strict=True)) / n,
            "top5": sum(y in h for h, y in zip(hits, labels, strict=True)) / n}


def load_imagenet_samples(bundle: Any, split: str | None = "test", limit: int | None = None,
                          root: str | Path | None = None, manifest: str | Path = IMAGENET_MANIFEST,
                          spread: bool = False, **locate_kwargs: Any) -> list[Sample]:
    """The real photos of ``split`` as :class:`Sample` objects (no boxes), read from the dataset folder.

    ``limit`` keeps the first photos (class order), or with ``spread`` evenly spaced ones (many
    kinds of class). Raises :class:`DatasetUnavailable` when the photos cannot be had (:func:`locate`).
    """
    folder = locate(root, **locate_kwargs)
    return load_samples(bundle, split=split, limit=limit, manifest=manifest, root=folder, spread=spread)


def study_samples(bundle: Any, split: str = "test", limit: int | None = None, spread: bool = False,
                  **locate_kwargs: Any) -> tuple[str, list[Sample]]:
    """``(dataset name, samples)``: the real photos when available, else (after printing why) the
    packaged dataset's samples of the same split. A checksum mismatch is still an error."""
    try:
        return IMAGENET, load_imagenet_samples(bundle, split, limit, spread=spread, **locate_kwargs)
    except DatasetUnavailable as err:
        print(err)
        return PACKAGED, load_samples(bundle, split=split, limit=limit, manifest=MANIFEST, spread=spread)
