"""Keep licence-restricted photos out of stored notebooks: drop the images of cells tagged ``imagenet-photos``.

The ImageNet photos may be used for research and teaching but not redistributed, so a notebook
committed with its outputs must not carry them. Cells that show them carry the tag
:data:`TAG`; after a headless run, ``python -m helpers.teaching.restricted NOTEBOOK...`` (the
Makefile's ``reproduce`` does it) replaces each such cell's pictures by a line saying where the
figure was written. Text outputs stay; run the notebook yourself to see the pictures inline.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

TAG = "imagenet-photos"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
NOTE = ("[figure of ImageNet photos not stored in the notebook: their licence forbids redistribution. "
        "Run the notebook to see it; the file is in results/]\n")


def strip_restricted_images(path: str | Path) -> int:
    """Remove every image output of the tagged cells of one notebook in place; returns how many went."""
    nb = nbformat.read(path, as_version=4)
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or TAG not in cell.metadata.get("tags", []):
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images = [k for k in IMAGE_TYPES if k in data]
            if not images:
                kept.append(out)
                continue
            removed += len(images)
            kept.append(nbformat.v4.new_output("stream", name="stdout", text=NOTE))
        cell.outputs = kept
    nbformat.write(nb, path)
    return removed


def main(paths: list[str]) -> None:
    """Strip every notebook named on the command line and say how many pictures each lost."""
    for p in paths:
        print(f"{p}: {strip_restricted_images(p)} restricted picture(s) removed")


if __name__ == "__main__":
    main(sys.argv[1:])
