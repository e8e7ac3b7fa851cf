"""The per-image result cache of :func:`helpers.evaluation.runner.evaluate`: atomic, checked, shared safely.

One JSON file per image, ``<image stem>-<key>.json``, holding ``{"key", "file", "result"}``.

* **Atomic writes**: an entry is written to a temporary file in the same folder, flushed and
  fsynced, then renamed over the final name (``os.replace``), so a reader sees either no entry or
  a complete one. A run killed mid-write leaves at most a hidden ``.*.tmp`` file, never read
  (safe to delete).
* **Checked reads**: an entry that does not parse, lacks its parts, or whose key or image does
  not match is not trusted: :func:`cached` recomputes it and says so in ONE line on stderr.
* **Concurrent runs**: computing an entry holds a lock file (``.<entry>.lock``, released by the
  operating system even when the process is killed). A second run on the same folder that reaches
  the same image waits for it and then reads the first run's entry, so each image is computed
  once and both runs get the same result.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from ..config import write_atomic

#: Parts every result must have (see :func:`helpers.evaluation.runner.evaluate_sample`).
RESULT_PARTS: tuple[str, ...] = ("rows", "timings", "curves")


def entry_path(cache_dir: str | Path, file: str, key: str) -> Path:
    """Where the entry of image ``file`` under ``key`` lives."""
    return Path(cache_dir) / f"{Path(file).stem}-{key}.json"


def read_entry(path: Path, key: str, file: str, parts: tuple[str, ...] = RESULT_PARTS) -> dict[str, Any]:
    """The result stored at ``path``; ValueError saying why when it is not a valid entry of ``file``/``key``
    holding every one of ``parts``."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"does not parse ({type(err).__name__}: {err})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict):
        raise ValueError("is not a cache entry (no 'result')")
    if entry.get("key") != key or entry.get("file") != file:
        raise ValueError(f"belongs to {entry.get('file')!r} / key {entry.get('key')!r}, "
                         f"not {file!r} / key {key!r}")
    missing = [p for p in parts if p not in entry["result"]]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    return entry["result"]


def store(path: Path, key: str, file: str, result: dict[str, Any]) -> None:
    """Write ``result`` as the entry of ``file``/``key`` at ``path`` (atomically)."""
    write_atomic(path, json.dumps({"key": key, "file": file, "result": result}))


def load(path: Path, key: str, file: str, warn: bool = True,
         parts: tuple[str, ...] = RESULT_PARTS) -> dict[str, Any] | None:
    """The valid entry at ``path``, or None (absent, or invalid: one warning line on stderr if ``warn``)."""
    if not path.is_file():
        return None
    try:
        return read_entry(path, key, file, parts)
    except (OSError, ValueError) as err:
        if warn:
            print(f"evaluate: cache entry {path.name} {err}; recomputing it", file=sys.stderr)
        return None


def cached(cache_dir: str | Path, key: str, file: str, compute: Callable[[], dict[str, Any]],
           parts: tuple[str, ...] = RESULT_PARTS) -> dict[str, Any]:
    """The entry of ``file``/``key`` in ``cache_dir``, computed by ``compute()`` and stored if it is not there.

    ``parts``: the keys every stored result must have. Holds the entry's lock while computing, so a
    concurrent run waits and then reads it.
    """
    path = entry_path(cache_dir, file, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.is_file()
    result = load(path, key, file, parts=parts)
    if result is not None:
        return result
    with FileLock(path.parent / f".{path.name}.lock"):
        # another run may have written it while we waited; a bad entry was already reported above
        result = load(path, key, file, warn=not existed, parts=parts)
        if result is None:
            result = compute()
            store(path, key, file, result)
    return result
