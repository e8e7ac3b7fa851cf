"""The stored-then-live cell: the picture and caption are displayed at once, the widget only on a click."""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt

from helpers.teaching import live


def test_picture_first_widget_on_click(tmp_path, monkeypatch) -> None:
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    fig.savefig(tmp_path / "view.png")
    shown: list = []
    monkeypatch.setattr(live, "display", lambda *objs, **kw: shown.extend(objs))
    built: list = []

    def build() -> widgets.Widget:
        built.append(widgets.Label("live"))
        return built[-1]

    box = live.stored_then_live(tmp_path / "view.png", "**the view**", build, label="open")
    assert shown[0].data == "**the view**" and shown[1].format == "jpeg"
    assert shown[2]["text/plain"] == live.STATIC_NOTE and "application/vnd.jupyter.widget-view+json" in shown[2]
    assert built == [] and len(shown) == 3                     # nothing live before the click
    button = box.children[0]
    assert button.description == "open"
    button.click()
    assert built and shown[-1] is built[0] and button.disabled
