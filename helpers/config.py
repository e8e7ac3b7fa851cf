"""Project-wide settings: paths, the quick mode, the seed, the one atomic file writer and the one progress bar."""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Repository root (the folder holding the notebooks).
ROOT: Path = Path(__file__).resolve().parent.parent
INPUT_DIR: Path = ROOT / "input_images"
MANIFEST: Path = INPUT_DIR / "manifest.csv"
#: The real-photo manifest (committed; the photos themselves never are, see helpers.data.imagenet).
IMAGENET_MANIFEST: Path = INPUT_DIR / "imagenet_manifest.csv"

#: Where the 800 real ImageNet photos are looked for: ``$XAI_IMAGENET_SAMPLE`` (relative paths are
#: taken from the repository root), else ``../shared/data/imagenet-sample`` beside the repository.
IMAGENET_SAMPLE_ENV: str = "XAI_IMAGENET_SAMPLE"
IMAGENET_SAMPLE_DEFAULT: Path = ROOT.parent / "shared" / "data" / "imagenet-sample"
#: Where they are downloaded to when that folder is absent: ``$XAI_DATA_CACHE``, else the user's cache
#: folder (``pooch.os_cache("xai-cam")``, ``~/.cache/xai-cam`` on Linux).
DATA_CACHE_ENV: str = "XAI_DATA_CACHE"

#: Quick mode (``XAI_QUICK=1``): the tests and CI run the notebooks on a small subset.
QUICK: bool = os.environ.get("XAI_QUICK", "0") not in ("", "0", "false", "False")

#: Where the notebooks write. Quick runs go to ``results/quick/`` (not tracked), so a test run
#: never overwrites the full results that ``make reproduce`` wrote.
RESULTS_DIR: Path = ROOT / "results" / "quick" if QUICK else ROOT / "results"

#: The one seed every random choice in the project derives from.
SEED: int = 0


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content replaces ``path`` atomically when the block ends without error:
    written to a temporary file in the same folder, fsynced, then renamed (``os.replace``). On any
    error (a full disk, Ctrl-C) the temporary file is removed and ``path`` is left as it was; an
    ``OSError`` of the write names ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)   # the permissions of a plain open(), not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text or bytes to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def progress_bar(iterable: Iterable[T], desc: str, disable: bool = False, leave: bool = True) -> Iterator[T]:
    """The one progress bar: a terminal bar on the process' real stderr, never a notebook widget.

    In a Jupyter kernel ``sys.stderr`` is the notebook's output, so a bar there would be stored with
    the notebook; ``sys.__stderr__`` is the terminal that started the kernel (the one running
    ``make reproduce``, or the Jupyter server's). Where that terminal is gone, no bar is drawn.
    """
    from tqdm import tqdm

    # ipykernel copies fd 2 into the notebook too; its saved copy of the original fd is the terminal.
    original = getattr(sys.stderr, "_original_stdstream_copy", None)
    stream = sys.__stderr__ if original is None else _terminal(original)
    return iter(tqdm(iterable, desc=desc, disable=disable or stream is None, leave=leave, file=stream))


def _terminal(fd: int) -> IO[str]:
    """A text stream on (a duplicate of) the file descriptor ``fd``, opened once per descriptor."""
    if fd not in _TERMINALS:
        _TERMINALS[fd] = os.fdopen(os.dup(fd), "w", buffering=1)
    return _TERMINALS[fd]


_TERMINALS: dict[int, IO[str]] = {}
