"""Maps computed elsewhere -- pytorch-grad-cam, Captum, anyone's code -- as a source beside the project's methods.

A :class:`MapSource` gives one map per image file. Three kinds:

* :func:`from_file`: one ``.npz`` keyed by the image's file name relative to the images' folder
  (``"n01440764/x.JPEG"``), or a folder of ``.npy`` files at the same relative paths with the suffix
  replaced (``n01440764/x.npy``); read with ``allow_pickle=False`` (a pickled object is refused);
* :func:`from_mapping`: a mapping ``{file: array}`` in memory;
* :func:`from_callable`: a function ``(images (N, C, H, W), classes (N,)) -> maps (N, h, w)``, e.g. a
  pytorch-grad-cam CAM object or a Captum attribution wrapped in two lines (README, "Anyone's maps").

A map is any 2-D array, at any resolution, of finite values >= 0 (an all-zero map is allowed and stays
zero). :func:`source_maps` resizes it as the project's maps are (:func:`helpers.cam.maps.upsample`,
bilinear) and scales it by its maximum (:func:`helpers.cam.maps.normalise_max`). Every file-based map is
checked by :func:`check_source` before any forward, with one line naming the file and the key.

A source is evaluated as a method (:func:`helpers.evaluation.runner.as_spec`): the method :data:`SOURCE`,
labelled with the source's name, whose one option is the source's :attr:`MapSource.identity` (so it joins a
study part's hash and the evaluation cache's keys: changed maps are never taken for the old ones). That
option is data; :func:`live` finds the source it stands for among those given in this process.
"""
from __future__ import annotations

import hashlib
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cam.maps import normalise_max, upsample

#: ``(images, classes) -> maps``: what a callable source computes for a batch.
MapFunction = Callable[[torch.Tensor, torch.Tensor], Any]
#: The method name of maps from outside in a method spec and a part's definition.
SOURCE = "maps"


@dataclass(frozen=True, eq=False)
class MapSource:
    """Maps from outside the package under the name ``name`` (the method's label in every table).

    ``lookup`` returns the raw 2-D map of one file (file-based and in-memory sources), ``compute``
    computes a batch (callable sources); ``provenance`` says where the maps came from (recorded with
    the rows: the path and its sha256, or the callable's qualified name). ``identity`` keys the maps in
    hashes and caches: their sha256, or for a callable (whose maps cannot be hashed) a token of this
    source object, so a callable's maps are computed afresh by every new source."""

    name: str
    provenance: Mapping[str, str]
    identity: str
    lookup: Callable[[str], np.ndarray] | None = None
    keys: frozenset[str] = field(default_factory=frozenset)
    compute: MapFunction | None = None
    #: An image's file name -> its key (a folder of ``.npy`` files drops the suffix).
    key_of: Callable[[str], str] = str

    def where(self, file: str) -> str:
        """Where the map of ``file`` comes from, for error messages: the path and the key."""
        return f"{self.provenance.get('path', self.name)}, key {self.key_of(file)!r}"


def check_map(array: Any, where: str) -> np.ndarray:
    """``array`` as a float32 2-D map, or one ValueError naming ``where`` (the file and key): not 2-D,
    not numeric, NaN or infinite values, or negative values."""
    array = np.asarray(array)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{where}: a map must hold numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{where}: a map must be 2-D (height, width), got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ValueError(f"{where}: the map is empty (shape {tuple(array.shape)})")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: the map has {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    if (array < 0).any():
        raise ValueError(f"{where}: the map has negative values (min {float(array.min()):.3g}); "
                         "give maps >= 0, e.g. after a ReLU")
    return array


def sha256_of(path: Path) -> str:
    """The sha256 of a file, or of a folder's files (their relative paths and contents, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*.npy") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            digest.update(p.relative_to(path).as_posix().encode() + b"\0")
        digest.update(p.read_bytes())
    return digest.hexdigest()


def _npz(name: str, path: Path) -> MapSource:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"--maps {name}: {path} is not a readable .npz file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"--maps {name}: {path} holds one array, not maps keyed by file name (use np.savez)")

    def lookup(key: str) -> np.ndarray:
        try:
            return archive[key]
        except ValueError as err:  # an object array: allow_pickle=False refuses it
            raise ValueError(f"{path}, key {key!r}: {err}") from None

    digest = sha256_of(path)
    return MapSource(name, {"path": str(path), "sha256": digest}, digest, lookup, frozenset(archive.files))


def _npy_folder(name: str, path: Path) -> MapSource:
    keys = frozenset(_stem(p.relative_to(path).as_posix()) for p in path.rglob("*.npy") if p.is_file())

    def lookup(key: str) -> np.ndarray:
        file = path / f"{key}.npy"
        try:
            return np.load(file, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None

    digest = sha256_of(path)
    return MapSource(name, {"path": str(path), "sha256": digest, "layout": "npy-folder"}, digest, lookup, keys,
                     key_of=_stem)


def from_file(name: str, path: str | Path) -> MapSource:
    """A source of maps stored in ``path``: one ``.npz`` or a folder of ``.npy`` files (module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"--maps {name}: {path} does not exist")
    return _npy_folder(name, path) if path.is_dir() else _npz(name, path)


def from_mapping(name: str, maps: Mapping[str, Any]) -> MapSource:
    """A source of in-memory maps ``{file name: 2-D array}`` (copied: the mapping may change afterwards)."""
    maps = {key: np.array(value) for key, value in maps.items()}
    digest = hashlib.sha256()
    for key in sorted(maps):
        array = np.ascontiguousarray(maps[key])
        digest.update(f"{key}\0{array.dtype.str}\0{array.shape}\0".encode() + array.tobytes())
    return MapSource(name, {"source": "mapping", "sha256": digest.hexdigest()}, digest.hexdigest(), maps.__getitem__,
                     frozenset(maps))


def from_callable(name: str, fn: MapFunction) -> MapSource:
    """A source that computes maps ``fn(images, classes) -> (N, h, w)`` per batch."""
    return MapSource(name, {"callable": getattr(fn, "__qualname__", type(fn).__qualname__)},
                     f"callable-{uuid.uuid4().hex}", compute=fn)


def parse_maps_option(text: str) -> MapSource:
    """``NAME=PATH`` (the command line's ``--maps``) -> :func:`from_file`; one line for anything else."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--maps wants NAME=PATH (a .npz file or a folder of .npy files), got {text!r}")
    return from_file(name.strip(), path.strip())


def check_source(source: MapSource, files: Sequence[str]) -> None:
    """Check a file-based or in-memory source against the images ``files`` before any forward: every file
    has a key, no key is left over, and every map passes :func:`check_map`. One ValueError naming the key."""
    if source.compute is not None:
        return
    where = source.provenance.get("path", source.name)
    missing = [f for f in files if source.key_of(f) not in source.keys]
    if missing:
        raise ValueError(f"{where}: no map for {len(missing)} image(s), e.g. key {source.key_of(missing[0])!r}")
    extra = sorted(source.keys - {source.key_of(f) for f in files})
    if extra:
        raise ValueError(f"{where}: {len(extra)} map(s) for no image, e.g. key {extra[0]!r}")
    for f in files:
        check_map(source.lookup(source.key_of(f)), source.where(f))


def _stem(file: str) -> str:
    """The key of an image in a folder of ``.npy`` files: its relative path without the suffix."""
    return Path(file).with_suffix("").as_posix()


def source_maps(source: MapSource, files: Sequence[str] | None, images: torch.Tensor,
                classes: torch.Tensor) -> torch.Tensor:
    """The source's maps of ``files`` (N, H, W) at the images' size, each scaled by its maximum (zeros stay zero).

    ``files=None``: the images are not the photos themselves (e.g. ADCC's explanation images); a callable
    computes their maps, stored maps have none (NaN)."""
    size = tuple(images.shape[-2:])
    if files is None and source.compute is None:
        return torch.full((len(images), *size), float("nan"))
    files = files if files is not None else [f"#{i}" for i in range(len(images))]
    if source.compute is not None:
        raw = source.compute(images, classes)
        raw = raw.detach().cpu() if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw))
        if raw.dim() == 4 and raw.shape[1] == 1:  # Captum's (N, 1, h, w)
            raw = raw[:, 0]
        if raw.dim() != 3 or len(raw) != len(files):
            raise ValueError(f"map source {source.name!r}: expected maps (N={len(files)}, h, w), "
                             f"got shape {tuple(raw.shape)}")
        maps = [torch.from_numpy(check_map(m.numpy(), f"map source {source.name!r}, image {f}"))
                for m, f in zip(raw, files, strict=True)]
    else:
        maps = [torch.from_numpy(check_map(source.lookup(source.key_of(f)), source.where(f))) for f in files]
    return torch.cat([normalise_max(upsample(m[None], size)) for m in maps])


#: The sources given in this process, by (name, identity): what a :data:`SOURCE` method's option stands for.
_LIVE: dict[tuple[str, str], MapSource] = {}


def method_options(source: MapSource) -> tuple[tuple[str, str], ...]:
    """The options of ``source`` as a :data:`SOURCE` method (its identity); :func:`live` finds it again."""
    _LIVE[source.name, source.identity] = source
    return (("identity", source.identity),)


def is_source(spec: Any) -> bool:
    """Whether a method spec (``label``, ``method``, ``options``) stands for maps from outside."""
    return spec.method == SOURCE


def live(spec: Any) -> MapSource:
    """The source a :data:`SOURCE` method spec stands for; one line when it was not given in this process."""
    identity = dict(spec.options).get("identity", "")
    try:
        return _LIVE[spec.label, identity]
    except KeyError:
        raise ValueError(f"maps {spec.label!r} ({identity[:16]}) were not given in this process: pass the map "
                         "source itself (or --maps NAME=PATH) again") from None


def stored(spec: Any) -> bool:
    """Whether a method spec stands for stored maps (a file or a mapping: only the photos' own maps exist)."""
    return is_source(spec) and live(spec).compute is None


def row_facts(spec: Any) -> dict[str, str]:
    """Where a method's maps came from, for its rows: ``maps_source`` (the path, ``mapping`` or the callable)
    and ``maps_sha256`` (empty for a callable); nothing for the package's own methods."""
    if not is_source(spec):
        return {}
    provenance = live(spec).provenance
    where = provenance.get("path") or provenance.get("callable") or provenance.get("source", "")
    return {"maps_source": where, "maps_sha256": provenance.get("sha256", "")}


def check_specs(specs: Sequence[Any], files: Sequence[str]) -> None:
    """:func:`check_source` of every method spec that stands for maps from outside, before any forward."""
    for spec in filter(is_source, specs):
        check_source(live(spec), files)
