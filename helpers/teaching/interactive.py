"""Explore the hybrid on one image: a slider for alpha and a dropdown of the model's top classes.

The raw Grad-CAM and LayerCAM maps of all top-k classes come from ONE forward/backward when the
explorer is built; moving the slider or changing the class only re-fuses them. Everything works
headless: :meth:`HybridExplorer.update` can be called without a frontend and returns the map.
"""
from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import clear_output, display

from ..evaluation.alpha import fused_maps, raw_maps
from ..cam.models import ModelBundle, predict_topk
from .viz import overlay


class HybridExplorer:
    """Slider (alpha) + class dropdown (top-k) over one preprocessed image (3, H, W)."""

    def __init__(self, bundle: ModelBundle, image: torch.Tensor, k: int = 5, alpha: float = 0.7) -> None:
        if image.dim() != 3:
            raise ValueError(f"image must be one preprocessed image (3, H, W), got shape {tuple(image.shape)}")
        self.bundle, self.image = bundle, image
        top = predict_topk(bundle, image[None], k)[0]
        self.classes = [c for c, _, _ in top]
        self.raw = raw_maps(bundle, image[None].repeat(len(top), 1, 1, 1), self.classes)
        self.slider = widgets.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="a")
        self.dropdown = widgets.Dropdown(options=[(f"{name} ({p:.2f})", c) for c, name, p in top],
                                         value=self.classes[0], description="class")
        self.output = widgets.Output()
        self.slider.observe(self.update, names="value")
        self.dropdown.observe(self.update, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.dropdown]), self.output])

    def fused(self, alpha: float, class_idx: int) -> torch.Tensor:
        """The hybrid map (H, W) in [0, 1] for ``class_idx`` (one of the top-k) at ``alpha``."""
        if class_idx not in self.classes:
            raise ValueError(f"class {class_idx} is not among the explorer's top classes {self.classes}")
        i = self.classes.index(class_idx)
        one = type(self.raw)(self.raw.gc[i:i + 1], self.raw.lc[i:i + 1], self.raw.class_idx[i:i + 1],
                             self.raw.logits[i:i + 1])
        return fused_maps(one, alpha, "geometric", tuple(self.image.shape[-2:]))[0]

    def figure(self, alpha: float, class_idx: int) -> plt.Figure:
        """Grad-CAM, the hybrid at ``alpha`` and LayerCAM for ``class_idx``, side by side."""
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        for ax, a, title in zip(axes, (1.0, alpha, 0.0), ("Grad-CAM (a=1)", f"hybrid (a={alpha:.2f})", "LayerCAM (a=0)")):
            ax.imshow(overlay(self.image, self.fused(a, class_idx), mean=self.bundle.mean, std=self.bundle.std))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(self.bundle.class_names[class_idx], fontsize=10)
        fig.tight_layout()
        return fig

    def update(self, *_: object) -> torch.Tensor:
        """Redraw for the widgets' current values; returns the shown hybrid map (H, W)."""
        alpha, class_idx = float(self.slider.value), int(self.dropdown.value)
        with self.output:
            clear_output(wait=True)
            fig = self.figure(alpha, class_idx)
            display(fig)
            plt.close(fig)
        return self.fused(alpha, class_idx)
