"""Licence-restricted photos never stay in a stored notebook: the cells that use them are marked by the package
itself (no tag to remember), their pictures are dropped, and every committed notebook is checked."""
from __future__ import annotations

import os
import sys

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from PIL import Image

from helpers.config import ROOT
from helpers.data import restricted as R
from helpers.teaching.restricted import restricted_pictures, strip_restricted_images

NOTEBOOKS = sorted(ROOT.glob("[0-9]_*.ipynb"))
PICTURE = new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
MARK = new_output("display_data", data={R.MIME: {"restricted": True}, "text/plain": R.NOTE})


def test_only_the_marked_cells_lose_their_pictures(tmp_path):
    text = new_output("stream", name="stdout", text="3 page(s)\n")
    marked = new_code_cell("show(photo)", outputs=[MARK, text, PICTURE])
    plain = new_code_cell("plot()", outputs=[PICTURE])
    nb = new_notebook(cells=[marked, plain])
    assert restricted_pictures(nb) == ["cell 0: image/png"]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert strip_restricted_images(path) == 1
    cells = nbformat.read(path, as_version=4).cells
    assert [o.get("text") or o["data"]["text/plain"] for o in cells[0].outputs] == [R.NOTE, "3 page(s)\n"]
    assert "image/png" in cells[1].outputs[0]["data"]
    assert restricted_pictures(nbformat.read(path, as_version=4)) == []
    assert strip_restricted_images(path) == 0           # idempotent


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_notebook_shows_a_restricted_photo(notebook):
    """A committed notebook whose restricted cells kept a picture (not stripped after its run) fails here."""
    assert restricted_pictures(nbformat.read(notebook, as_version=4)) == []


def test_files_in_a_registered_folder_are_restricted(tmp_path):
    R.register_root(tmp_path / "photos")
    assert R.is_restricted(tmp_path / "photos" / "a" / "x.JPEG")
    assert not R.is_restricted(tmp_path / "elsewhere.png") and not R.is_restricted(ROOT / "input_images" / "x.png")


KERNEL_CELLS = [
    # 0: before any restricted photo, a packaged photo's picture is stored
    "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\nimport matplotlib.pyplot as plt\n"
    "import numpy as np\nfrom helpers.config import INPUT_DIR\nfrom helpers.data.images import load_image\n"
    "from helpers.data.imagenet import configured_root\nfrom helpers.teaching.overview import preview\n"
    "plt.imshow(np.asarray(load_image(INPUT_DIR / 'photo_coffee.png'))); plt.show()",
    # 1: reading a restricted photo marks the cell (it shows nothing itself)
    "photo = load_image(configured_root() / 'n0_x.JPEG')",
    # 2: drawing it in a later cell is caught too
    "plt.imshow(np.asarray(photo)); plt.show()",
    # 3: a chart of numbers and a one-channel map stay
    "fig, (a, b) = plt.subplots(1, 2); a.plot([1, 3, 2]); b.imshow(np.eye(4)); plt.show()",
    # 4: a figure of it saved to a file (nothing shown) ...
    "fig = plt.figure(); plt.imshow(np.asarray(photo)); fig.savefig(OUT); plt.close(fig)",
    # 5: ... and shown in another cell
    "preview(OUT)",
]


def test_a_real_kernel_marks_every_cell_that_shows_a_restricted_photo(tmp_path):
    """Executed in a Jupyter kernel as ``make reproduce`` does: cells 1, 2, 4 and 5 are marked, 0 and 3 keep
    their pictures, and after stripping nothing of the photo is stored."""
    from nbclient import NotebookClient

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photos / "n0_x.JPEG")
    cells = [new_code_cell(f"OUT = {str(tmp_path / 'fig.png')!r}")] + [new_code_cell(c) for c in KERNEL_CELLS]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    env = {"XAI_IMAGENET_SAMPLE": str(photos), "PYTHONPATH": str(ROOT)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                       kernel_manager_kwargs={"kernel_cmd": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                             "{connection_file}"]}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    marked = [i - 1 for i, c in enumerate(nb.cells) if any(R.MIME in o.get("data", {}) for o in c.outputs)]
    assert marked == [1, 2, 4, 5]
    assert restricted_pictures(nb) == ["cell 3: image/png", "cell 6: image/jpeg"]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert strip_restricted_images(path) == 2
    kept = nbformat.read(path, as_version=4)
    assert restricted_pictures(kept) == []
    assert ["image/png" in o.get("data", {}) for o in kept.cells[1].outputs + kept.cells[4].outputs].count(True) == 2
