"""Example figures over a dataset split: CAM overlays per method, ground-truth boxes outlined."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from .cams import compute_cams
from .models import ModelBundle
from .viz import plot_cam_grid


def save_examples(bundle: ModelBundle, samples: Sequence, methods: Sequence[str], out_dir: str | Path,
                  per_figure: int = 6, progress: bool = True, **cam_kwargs) -> list[Path]:
    """Explain each sample's labelled class with every method; one PNG per ``per_figure`` samples.

    ``samples`` are :class:`helpers.data.Sample` objects (``tensor``, ``label_idx``, ``label_name``,
    ``file``, ``boxes_crop``); ``cam_kwargs`` go to :func:`helpers.cams.compute_cams`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    starts = range(0, len(samples), per_figure)
    for page, start in enumerate(tqdm(starts, desc=out_dir.name, disable=not progress)):
        chunk = samples[start:start + per_figure]
        images = torch.stack([s.tensor for s in chunk])
        maps = compute_cams(bundle, images, methods, class_idx=[s.label_idx for s in chunk], **cam_kwargs)
        titles = [f"{Path(s.file).stem}: {s.label_name}" for s in chunk]
        boxes = [[box for idx, box in s.boxes_crop if idx == s.label_idx] for s in chunk]
        path = out_dir / f"examples_{page:02d}.png"
        fig = plot_cam_grid(list(images), {m: maps[m].cpu() for m in methods}, titles, bundle.mean, bundle.std,
                            path=path, boxes=boxes)
        plt.close(fig)
        paths.append(path)
    return paths
