"""The hybrid explorer: photo, class, layer and a slider for a over cached raw Grad-CAM / LayerCAM maps.

One class serves the inline widget of notebook 4 and the web page of ``python -m helpers explore``
(:mod:`helpers.teaching.explorer`). The raw maps of a photo's top-k classes at a layer come from ONE
forward/backward (:func:`helpers.evaluation.alpha_sweep.raw_maps`) and are cached per (photo, class,
layer); moving the slider only re-fuses them (:func:`fused_maps`) and redraws the hybrid picture.
Everything works headless: :meth:`HybridExplorer.update` can be called without a frontend.
Every value that comes from the page is checked here as if the page were hostile: an a that is not a
number in [0, 1] is put back to the last good one, an upload over :data:`UPLOAD_LIMIT` or not an image is
refused with a message, a file name is only shown, never used as a path.
"""
from __future__ import annotations

import html
import io
import math
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Mapping

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from ..cam.bundle import ModelBundle
from ..cam.checks import check_class_idx
from ..cam.inference import predict_topk
from ..data.images import ImageLoadError, load_image
from ..evaluation.alpha_sweep import RawMaps, fused_maps, raw_maps
from ..evaluation.metrics import MODES, PRESETS, auc, insertion_deletion_curves
from .viz import overlay

#: A photo source: returns the photo as an RGB PIL image (loaded only when chosen).
PhotoLoader = Callable[[], Image.Image]
#: The predicted-a hook: (bundle, preprocessed image, class, layer) -> a; or a sentence saying why there is
#: no prediction (shown instead); or None (nothing shown).
AlphaPredictor = Callable[[ModelBundle, torch.Tensor, int, str], "float | str | None"]

#: Column titles and the a at which the hybrid equals each method.
PANELS = (("Grad-CAM (a = 1)", 1.0), ("hybrid", None), ("LayerCAM (a = 0)", 0.0))
CMAP = "jet"
GIVEN = "the given image"
#: The largest photo accepted for upload (the server takes websocket messages up to twice this).
UPLOAD_LIMIT = 32 * 2**20


def png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) float array in [0, 1] as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def figure_png(fig: plt.Figure, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small tensor work on one intra-op thread: the slider's 7 x 7 fusion and upsampling gain
    nothing from threads, and on a busy 2-core machine waking the second one cost 80 ms (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def colour_bar_png() -> bytes:
    """The overlays' colour bar (map value 0 to 1 in :data:`CMAP`), drawn once."""
    fig, ax = plt.subplots(figsize=(7.4, 0.3))
    fig.colorbar(matplotlib.cm.ScalarMappable(cmap=CMAP), cax=ax, orientation="horizontal",
                 label="map value (each map scaled to [0, 1] by its maximum)")
    return figure_png(fig)


def shown_name(name: object, limit: int = 80) -> str:
    """An uploaded file's name as shown: its last path part, printable characters only, at most ``limit``."""
    text = "".join(ch for ch in Path(str(name).replace("\\", "/")).name if ch.isprintable())
    return text[:limit] or "upload"


class HybridExplorer:
    """Grad-CAM, the hybrid at a and LayerCAM side by side for a chosen photo, class and layer.

    ``image``: a preprocessed image (3, H, W) shown as :data:`GIVEN`; ``photos``: further choices
    ``{name: loader}`` (either may be left out, not both). ``k``: how many top classes the class
    list offers (any of the model's classes can be searched). ``alpha``: the slider's start value.
    ``predict_alpha``: the hook for a predicted a, shown next to the slider when it returns a value.
    """

    def __init__(self, bundle: ModelBundle, image: torch.Tensor | None = None, k: int = 5, alpha: float = 0.7,
                 photos: Mapping[str, PhotoLoader] | None = None, predict_alpha: AlphaPredictor | None = None
                 ) -> None:
        if image is not None and image.dim() != 3:
            raise ValueError(f"image must be one preprocessed image (3, H, W), got shape {tuple(image.shape)}")
        if image is None and not photos:
            raise ValueError("give an image or at least one photo to explore")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.bundle, self.k, self.predict_alpha = bundle, k, predict_alpha
        self.loaders: dict[str, PhotoLoader] = dict(photos or {})
        self.images: dict[str, torch.Tensor] = {} if image is None else {GIVEN: image}
        self.cache: dict[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.top: list[tuple[int, str, float]] = []
        self.current, self.class_idx, self.alpha = "", -1, float(alpha)
        self.photo = widgets.Dropdown(options=list(self.images) + list(self.loaders), description="photo")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload a photo",
                                         layout=widgets.Layout(width="auto"))
        self.message = widgets.HTML()
        self.dropdown = widgets.Dropdown(description="top classes", layout=widgets.Layout(width="320px"))
        names = [f"{name} ({i})" for i, name in enumerate(bundle.class_names)]
        self.search = widgets.Combobox(options=names, ensure_option=True, placeholder="search all class names",
                                       description="any class")
        self.layer = widgets.Dropdown(options=list(dict.fromkeys([bundle.target_layer, *bundle.layers[::-1]])),
                                      value=bundle.target_layer, description="layer")
        self.slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="a",
                                          continuous_update=True, readout_format=".2f")
        self.predicted = widgets.HTML(layout=widgets.Layout(display="none"))
        self.pictures = [widgets.Image(format="png", width=240) for _ in PANELS]
        self.captions = [widgets.HTML() for _ in PANELS]
        self.button = widgets.Button(description="faithfulness", tooltip="insertion/deletion curves (rise preset)")
        self.progress = widgets.IntProgress(min=0, max=len(MODES), layout=widgets.Layout(display="none"))
        self.status = widgets.HTML()
        self.curves = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        for w, cls in ((self.photo, "photo"), (self.upload, "upload"), (self.message, "message"),
                       (self.dropdown, "top-classes"), (self.search, "search"), (self.layer, "layer"),
                       (self.slider, "alpha"), (self.predicted, "predicted-alpha"), (self.button, "faithfulness"),
                       (self.status, "faithfulness-status"),
                       *zip(self.pictures, ("gradcam", "hybrid", "layercam"), strict=True)):
            w.add_class(f"xai-{cls}")
        self._choose_photo(self.photo.value)
        self.photo.observe(lambda ch: self._choose_photo(ch["new"]), names="value")
        self.upload.observe(lambda ch: self._uploaded(ch["new"]), names="value")
        self.dropdown.observe(lambda ch: ch["new"] not in (None, self.class_idx) and self.set_class(ch["new"]),
                              names="value")
        self.search.observe(lambda ch: self._searched(ch["new"]), names="value")
        self.layer.observe(lambda ch: self._layer_chosen(ch["new"], ch["old"]), names="value")
        self.slider.observe(lambda ch: self._slid(ch["new"]), names="value")
        self.button.on_click(lambda _: self.faithfulness())
        panels = [widgets.VBox([c, p]) for c, p in zip(self.captions, self.pictures, strict=True)]
        self.widget = widgets.VBox([
            widgets.HBox([self.photo, self.upload]), self.message,
            widgets.HBox([self.dropdown, self.search]), widgets.HBox([self.layer, self.slider, self.predicted]),
            widgets.HBox(panels), widgets.Image(value=colour_bar_png(), format="png", width=720),
            widgets.HBox([self.button, self.progress, self.status]), self.curves])

    @property
    def classes(self) -> list[int]:
        """The current photo's top-k class indices, most probable first."""
        return [c for c, _, _ in self.top]

    @property
    def image(self) -> torch.Tensor:
        """The current photo, preprocessed (3, H, W)."""
        return self.images[self.current]

    # ---------------------------------------------------------------- choices

    def add_photo(self, name: str, image: Image.Image) -> None:
        """Add an RGB photo to the choices and show it (a photo of the same name, e.g. a second upload of
        ``x.jpg``, is replaced: its cached maps go with it)."""
        self.images[name] = self.bundle.preprocess(image).to(self.bundle.device)
        self.cache = {key: maps for key, maps in self.cache.items() if key[0] != name}
        self.photo.options = list(dict.fromkeys([*self.photo.options, name]))
        if self.current == name:
            self.current = ""
        if self.photo.value == name:
            self._choose_photo(name)
        else:
            self.photo.value = name

    def _choose_photo(self, name: str) -> None:
        if name == self.current:
            return
        if name not in self.images and name not in self.loaders:  # no photo (a forged empty choice)
            self.photo.value = self.current
            return
        if name not in self.images:
            try:
                self.images[name] = self.bundle.preprocess(self.loaders[name]()).to(self.bundle.device)
            except (ImageLoadError, OSError) as err:
                self.message.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
                self.photo.value = self.current or None
                return
        self.message.value, self.current = "", name
        self.top = predict_topk(self.bundle, self.image[None], self.k)[0]
        self.class_idx = self.classes[0]
        self.dropdown.options = [(f"{name} ({p:.2f})", c) for c, name, p in self.top]
        self.set_class(self.classes[0])

    def _refuse(self, text: str) -> None:
        self.message.value = f"<span style='color:#b00'>{html.escape(text)}</span>"

    def _uploaded(self, files: tuple) -> None:
        """Read an upload through :func:`load_image`: a file over :data:`UPLOAD_LIMIT` or a bad one shows
        why, nothing else changes. The upload is let go of (the widget keeps no copy)."""
        if not files:
            return
        name, content = shown_name(files[-1]["name"]), files[-1]["content"]
        self.upload.value = ()
        if len(content) > UPLOAD_LIMIT:
            self._refuse(f"upload refused: {name} is {len(content):,} bytes, over the {UPLOAD_LIMIT // 2**20} MiB "
                         f"limit ({UPLOAD_LIMIT:,} bytes)")
            return
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "upload"  # the sent name is never a path
            path.write_bytes(content)
            try:
                image = load_image(path)
            except ImageLoadError as err:
                self._refuse(f"upload refused: {str(err).replace(str(path), name)}")
                return
        self.add_photo(f"upload: {name}", image)

    def _layer_chosen(self, layer: str | None, before: str) -> None:
        if layer is None:  # no layer (a forged empty choice): the last one back
            self.layer.value = before
        else:
            self.update()

    def _slid(self, alpha: object) -> None:
        """The slider moved: redraw the hybrid at a finite a in [0, 1]; any other value (a forged message)
        is put back to the last good a, with a message."""
        if isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0:
            self.alpha = float(alpha)
            self.show_hybrid()
        else:
            self._refuse(f"a must be a number in [0, 1], not {alpha!r}; kept a = {self.alpha:.2f}")
            self.slider.value = self.alpha

    def _searched(self, text: str) -> None:
        if text.endswith(")") and text in self.search.options:
            self.set_class(int(text.rsplit("(", 1)[1][:-1]))

    def set_class(self, class_idx: int) -> None:
        """Explain ``class_idx`` (any of the model's classes) and redraw."""
        self.class_idx = int(check_class_idx(class_idx, 1, len(self.bundle.class_names))[0])
        self.dropdown.value = self.class_idx if self.class_idx in self.classes else None
        self.update()

    # ---------------------------------------------------------------- maps

    def raw(self, class_idx: int, layer: str | None = None) -> RawMaps:
        """The cached raw maps of ``class_idx`` on the current photo at ``layer``: one pass for the
        top-k classes (and ``class_idx``) the first time, a dictionary look-up afterwards."""
        layer = layer or self.layer.value
        key = (self.current, int(class_idx), layer)
        if key not in self.cache:
            wanted = [c for c in dict.fromkeys([*self.classes, int(class_idx)])
                      if (self.current, c, layer) not in self.cache]
            maps = raw_maps(self.bundle, self.image[None].expand(len(wanted), -1, -1, -1), wanted, layer)
            for i, c in enumerate(wanted):
                self.cache[(self.current, c, layer)] = (maps.gc[i:i + 1], maps.lc[i:i + 1], maps.logits[i:i + 1])
        gc, lc, logits = self.cache[key]
        return RawMaps(gc, lc, torch.tensor([int(class_idx)]), logits)

    def fused(self, alpha: float, class_idx: int | None = None, layer: str | None = None) -> torch.Tensor:
        """The hybrid map (H, W) in [0, 1] at ``alpha`` (default class and layer: the chosen ones)."""
        c = self.class_idx if class_idx is None else int(check_class_idx(class_idx, 1, len(self.bundle.class_names))[0])
        return fused_maps(self.raw(c, layer), alpha, "geometric", tuple(self.image.shape[-2:]))[0]

    def _overlay(self, cam: torch.Tensor) -> np.ndarray:
        return overlay(self.image, cam, cmap=CMAP, mean=self.bundle.mean, std=self.bundle.std)

    def show_hybrid(self) -> torch.Tensor:
        """Re-fuse the cached raw maps at the slider's a and redraw the hybrid picture; returns the map."""
        alpha = self.alpha
        with one_thread():
            cam = self.fused(alpha)
        self.pictures[1].value = png(self._overlay(cam))
        self.captions[1].value = f"<b>hybrid (a = {alpha:.2f})</b>"
        return cam

    def update(self, *_: object) -> torch.Tensor:
        """Redraw all three pictures for the widgets' current values; returns the shown hybrid map (H, W)."""
        for (title, a), picture, caption in zip(PANELS, self.pictures, self.captions, strict=True):
            if a is not None:
                picture.value = png(self._overlay(self.fused(a)))
                caption.value = f"<b>{title}</b>"
        name = html.escape(self.bundle.class_names[self.class_idx])
        self.status.value = f"class <b>{name}</b> ({self.class_idx}), layer {self.layer.value}"
        self.curves.layout.display = "none"
        self.show_predicted_alpha()
        return self.show_hybrid()

    # ---------------------------------------------------------------- hook: predicted a
    def show_predicted_alpha(self) -> float | str | None:
        """HOOK for a predicted a: ``predict_alpha(bundle, image, class, layer)`` (a constructor argument)
        is shown next to the slider when it returns a value, its sentence when it says why there is
        none, and nothing when it returns None."""
        value = None if self.predict_alpha is None else self.predict_alpha(
            self.bundle, self.image, self.class_idx, self.layer.value)
        if isinstance(value, str):
            self.predicted.value = f"<span style='color:#666'>{html.escape(value)}</span>"
        else:
            self.predicted.value = "" if value is None else f"predicted a = <b>{float(value):.2f}</b>"
        self.predicted.layout.display = "none" if value is None else None
        return value

    # ---------------------------------------------------------------- faithfulness

    def faithfulness(self) -> dict[str, torch.Tensor]:
        """Insertion and deletion curves (rise preset) of Grad-CAM, the hybrid at a and LayerCAM on the
        current photo and class, drawn with their AUCs: ``{"insertion": (3, K+1), "deletion": (3, K+1)}``."""
        alpha, cfg = self.alpha, PRESETS["rise"]
        maps = torch.stack([self.fused(a if a is not None else alpha) for _, a in PANELS])
        x, idx = self.image[None].expand(len(PANELS), -1, -1, -1), [self.class_idx] * len(PANELS)
        self.progress.value, self.progress.layout.display = 0, None
        curves = {}
        for mode in MODES:
            self.status.value = f"computing the {mode} curves ({cfg['steps']} steps) ..."
            curves[mode] = insertion_deletion_curves(self.bundle, x, maps, idx, mode, cfg["steps"],
                                                     cfg[f"{mode}_substrate"], cfg["chunk_size"]).cpu()
            self.progress.value += 1
        self.progress.layout.display = "none"
        names = [title if a is not None else f"hybrid (a = {alpha:.2f})" for title, a in PANELS]
        aucs = {mode: auc(c) for mode, c in curves.items()}
        self.status.value = "AUC " + "; ".join(
            f"{n}: insertion {float(aucs['insertion'][i]):.3f}, deletion {float(aucs['deletion'][i]):.3f}"
            for i, n in enumerate(names))
        self.curves.value, self.curves.layout.display = figure_png(self._plot_curves(curves, aucs, names)), None
        return curves

    def _plot_curves(self, curves: dict, aucs: dict, names: list[str]) -> plt.Figure:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3))
        for ax, mode in zip(axes, MODES, strict=True):
            x = np.linspace(0, 1, curves[mode].shape[1])
            for i, name in enumerate(names):
                ax.plot(x, curves[mode][i].numpy(), label=f"{name}: AUC {float(aucs[mode][i]):.3f}")
            better = "higher" if mode == "insertion" else "lower"
            ax.set(xlabel="fraction of pixels changed", ylabel="class probability",
                   title=f"{mode} ({better} AUC is better)")
            ax.legend(fontsize=7)
        fig.suptitle(f"{self.bundle.class_names[self.class_idx]}, layer {self.layer.value}, rise preset", fontsize=9)
        fig.tight_layout()
        return fig

    # ---------------------------------------------------------------- static picture

    def figure(self, alpha: float, class_idx: int | None = None) -> plt.Figure:
        """Grad-CAM, the hybrid at ``alpha`` and LayerCAM side by side with a colour bar (a static picture)."""
        c = self.class_idx if class_idx is None else class_idx
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.8), layout="constrained")
        for ax, (title, a) in zip(axes, PANELS, strict=True):
            ax.imshow(self._overlay(self.fused(alpha if a is None else a, c)))
            ax.set_title(title if a is not None else f"hybrid (a = {alpha:.2f})", fontsize=9)
            ax.axis("off")
        fig.colorbar(matplotlib.cm.ScalarMappable(cmap=CMAP), ax=axes, orientation="horizontal", fraction=0.05,
                     label="map value")
        fig.suptitle(f"{self.bundle.class_names[c]}, layer {self.layer.value}", fontsize=10)
        return fig
