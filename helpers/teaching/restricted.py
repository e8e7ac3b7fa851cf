"""Keep licence-restricted photos out of stored notebooks: drop every picture of the cells that used them.

A cell that read a restricted photo, or drew or showed one (:mod:`helpers.data.restricted`), carries
an output of type :data:`helpers.data.restricted.MIME`; after a headless run,
``python -m helpers.teaching.restricted NOTEBOOK...`` (the Makefile's ``reproduce`` does it) removes
every picture of those cells and keeps the mark's one line, which says why. Text outputs stay; run the
notebook yourself to see the pictures inline. :func:`restricted_pictures` finds what a stored
notebook still shows of them (the tests fail on any).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from ..data.restricted import MIME

IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif", "image/webp", "application/pdf")


def _marked(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and any(MIME in out.get("data", {}) for out in cell.get("outputs", []))


def _pictures(out: nbformat.NotebookNode) -> list[str]:
    return [k for k in out.get("data", {}) if k in IMAGE_TYPES]


def restricted_pictures(nb: nbformat.NotebookNode) -> list[str]:
    """``"cell N: image/png"`` for every picture a marked cell of ``nb`` still holds (none once stripped)."""
    return [f"cell {i}: {kind}" for i, cell in enumerate(nb.cells) if _marked(cell)
            for out in cell.outputs for kind in _pictures(out)]


def strip_restricted_images(path: str | Path) -> int:
    """Remove every picture of the marked cells of one notebook in place; returns how many went."""
    nb = nbformat.read(path, as_version=4)
    removed = 0
    for cell in filter(_marked, nb.cells):
        removed += sum(len(_pictures(out)) for out in cell.outputs)
        cell.outputs = [out for out in cell.outputs if not _pictures(out)]
    nbformat.write(nb, path)
    return removed


def main(paths: list[str]) -> None:
    """Strip every notebook named on the command line and say how many pictures each lost."""
    for p in paths:
        print(f"{p}: {strip_restricted_images(p)} restricted picture(s) removed")


if __name__ == "__main__":
    main(sys.argv[1:])
