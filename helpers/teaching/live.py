"""A notebook cell for an interactive view: its stored picture for static renders, the live widget on request.

A widget drawn while a notebook is executed headless stores its whole state (every picture it holds) in
the notebook, and a static render (GitHub, nbviewer, a closed notebook) cannot show it anyway. The cell
therefore shows a picture of the view, stored like any figure, and a button that builds the live widget
in a running kernel: until it is clicked only the button's few bytes of widget state exist.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import ipywidgets as widgets
from IPython.display import Markdown, display

from .viz import preview

#: What a static render shows in place of the button (its plain-text fallback).
STATIC_NOTE = "(in a running notebook, a button here opens the live view)"


def stored_then_live(picture: str | Path, caption: str, build: Callable[[], widgets.Widget],
                     label: str = "open it live") -> widgets.VBox:
    """Show ``caption`` (Markdown) and ``picture`` (a light JPEG copy, :func:`helpers.teaching.viz.preview`),
    then a button labelled ``label`` that displays ``build()`` below it when clicked (once). Returns the
    button's box, displayed with :data:`STATIC_NOTE` as its plain-text fallback."""
    display(Markdown(caption), preview(picture))
    button = widgets.Button(description=label, layout=widgets.Layout(width="auto"))
    out = widgets.Output()

    def opened(_: widgets.Button) -> None:
        button.disabled = True
        with out:
            display(build())

    button.on_click(opened)
    box = widgets.VBox([button, out])
    bundle = box._repr_mimebundle_()
    display({**bundle, "text/plain": STATIC_NOTE}, raw=True)
    return box
