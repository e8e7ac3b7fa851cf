"""Licence-restricted photos: which files are restricted, and the mark their use leaves in a notebook cell.

The real ImageNet photos may be used for research and teaching but not redistributed, so a notebook
stored with its outputs must never carry a picture of them. The protection holds by construction,
not by a tag someone must remember:

1. every folder the package reads the real photos from is registered here
   (:func:`register_root`; :mod:`helpers.data.imagenet` registers each folder it resolves);
2. the one image reader (:func:`helpers.data.images.load_image`) calls :func:`note_read` for every
   file; for a file in a registered folder, inside a Jupyter kernel, the current cell gets a
   :data:`MIME` output that says its pictures are not stored;
3. from then on, in that kernel, every cell that draws an RGB picture with matplotlib (``imshow``)
   or previews a figure file that was saved from one is marked the same way: a picture made from a
   photo loaded in an earlier cell is caught too, while charts of numbers (lines, bars, heat maps
   of one channel) are not;
4. after a headless run, :func:`helpers.teaching.restricted.strip_restricted_images` removes every
   picture of the marked cells, and a test fails on any stored notebook whose marked cells still
   hold one.

Outside a kernel (scripts, the command line, tests) nothing is displayed; only the folders are known.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: The output type that marks a cell whose pictures must not be stored.
MIME = "application/vnd.xai-cam.restricted+json"
NOTE = ("[this cell shows licence-restricted ImageNet photos: their pictures are not stored with the notebook "
        "(their licence forbids redistribution); run the notebook to see them]")

_ROOTS: set[Path] = set()
_FILES: set[Path] = set()          # figure files saved from a figure that drew a restricted photo
_STATE = {"loaded": False, "marked": -1, "guarded": False}


def register_root(folder: str | Path) -> Path:
    """Record ``folder`` as holding restricted photos (every file below it is restricted); returns it."""
    path = Path(folder)
    _ROOTS.add(path.resolve(strict=False))
    return path


def is_restricted(path: str | Path) -> bool:
    """Whether ``path`` lies in a registered folder, or is a figure file saved from a restricted photo."""
    resolved = Path(path).resolve(strict=False)
    return resolved in _FILES or any(resolved.is_relative_to(root) for root in _ROOTS)


def _kernel() -> Any:
    """The running IPython kernel shell, or None outside a Jupyter kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def mark_cell() -> None:
    """Mark the running notebook cell (once per cell) as one whose pictures must not be stored."""
    shell = _kernel()
    if shell is None or _STATE["marked"] == shell.execution_count:
        return
    from IPython.display import display

    _STATE["marked"] = shell.execution_count
    display({MIME: {"restricted": True}, "text/plain": NOTE}, raw=True)


def note_read(path: str | Path) -> None:
    """Called by the image reader for every file it reads: a restricted one marks the cell and arms the
    matplotlib guard for the rest of this kernel's life."""
    if not _ROOTS or not is_restricted(path):
        return
    _STATE["loaded"] = True
    if _kernel() is not None:
        _guard_matplotlib()
        mark_cell()


def note_shown(path: str | Path) -> None:
    """Called before a figure file is displayed: a file saved from a restricted photo marks the cell."""
    if is_restricted(path):
        mark_cell()


def _is_picture(data: Any) -> bool:
    """An RGB(A) image (what a photo is drawn as), not a one-channel map or a chart."""
    shape = getattr(data, "shape", None)
    if shape is None and hasattr(data, "mode"):           # a PIL image
        return data.mode not in ("L", "1", "I", "F", "P")
    return shape is not None and len(shape) == 3 and shape[-1] in (3, 4)


def _guard_matplotlib() -> None:
    """Once per kernel: ``Axes.imshow`` of an RGB picture marks the cell and its figure; saving that
    figure records the file (so showing it later marks that cell too)."""
    if _STATE["guarded"]:
        return
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    imshow, savefig = Axes.imshow, Figure.savefig

    def guarded_imshow(self: Axes, X: Any, *args: Any, **kwargs: Any) -> Any:
        if _STATE["loaded"] and _is_picture(X):
            self.get_figure(root=True)._xai_restricted = True
            mark_cell()
        return imshow(self, X, *args, **kwargs)

    def guarded_savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        out = savefig(self, fname, *args, **kwargs)
        if getattr(self, "_xai_restricted", False) and isinstance(fname, (str, Path)):
            _FILES.add(Path(fname).resolve(strict=False))
        return out

    Axes.imshow, Figure.savefig = guarded_imshow, guarded_savefig
    _STATE["guarded"] = True
