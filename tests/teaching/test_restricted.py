"""Licence-restricted pictures are dropped from stored notebooks; everything else stays."""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from helpers.teaching.restricted import NOTE, TAG, strip_restricted_images


def test_only_the_tagged_cells_lose_their_pictures(tmp_path):
    picture = new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    text = new_output("stream", name="stdout", text="3 page(s)\n")
    tagged = new_code_cell("preview(pages[0])", metadata={"tags": [TAG]}, outputs=[text, picture])
    plain = new_code_cell("plot()", outputs=[picture])
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[tagged, plain]), path)
    assert strip_restricted_images(path) == 1
    cells = nbformat.read(path, as_version=4).cells
    assert [o.get("text") for o in cells[0].outputs] == ["3 page(s)\n", NOTE]
    assert "image/png" in cells[1].outputs[0]["data"]
    assert strip_restricted_images(path) == 0           # idempotent
