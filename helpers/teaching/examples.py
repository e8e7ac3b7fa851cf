"""Example figures over a dataset split: CAM overlays per method, ground-truth boxes outlined, photo licences."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ..cam.backend import infer
from ..cam.bundle import ModelBundle
from ..cam.engine import Method, compute_cams
from ..config import MANIFEST, progress_bar
from ..data.images import read_manifest
from .viz import plot_cam_grid


def two_object_sample(samples: Sequence, bundle: ModelBundle | None = None):
    """A sample whose boxes hold two different classes (a two-object composite), else an error.

    Without ``bundle`` the first such sample; with it, the one whose less likely class (of its first
    two) has the highest softmax probability, i.e. where the model sees both objects best.
    """
    pairs = [s for s in samples if len({idx for idx, _ in s.boxes_crop}) >= 2]
    if not pairs:
        raise ValueError(f"none of the {len(samples)} samples has boxes of two different classes")
    if bundle is None:
        return pairs[0]
    classes = torch.tensor([list(dict.fromkeys(idx for idx, _ in s.boxes_crop))[:2] for s in pairs])
    probs = infer(bundle, torch.stack([s.tensor for s in pairs])).softmax(dim=1).cpu()
    return pairs[int(probs.gather(1, classes).amin(dim=1).argmax())]


def save_examples(bundle: ModelBundle, samples: Sequence, methods: Sequence[Method], out_dir: str | Path,
                  per_figure: int = 6, progress: bool = True, extra: Mapping[str, dict] | None = None,
                  **cam_kwargs) -> list[Path]:
    """Explain each sample's labelled class with every method; one PNG per ``per_figure`` samples.

    ``samples`` are :class:`helpers.data.Sample` objects (``tensor``, ``label_idx``, ``label_name``,
    ``file``, ``boxes_crop``); ``cam_kwargs`` go to :func:`helpers.cam.engine.compute_cams`. ``extra``
    adds columns computed with other settings: ``{title: compute_cams kwargs with one method}``,
    e.g. ``{"layercam, 3 layers": {"methods": ("layercam",), "layer": bundle.multi_layers}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    starts = range(0, len(samples), per_figure)
    for page, start in enumerate(progress_bar(starts, desc=out_dir.name, disable=not progress)):
        chunk = samples[start:start + per_figure]
        images = torch.stack([s.tensor for s in chunk])
        idx = [s.label_idx for s in chunk]
        computed = compute_cams(bundle, images, methods, target=idx, **cam_kwargs)
        maps = {m: v.cpu() for m, v in computed.items()}
        for title, kwargs in (extra or {}).items():
            maps[title] = next(iter(compute_cams(bundle, images, target=idx, **kwargs).values())).cpu()
        titles = [f"{Path(s.file).stem}: {s.label_name}" for s in chunk]
        boxes = [[box for idx, box in s.boxes_crop if idx == s.label_idx] for s in chunk]
        path = out_dir / f"examples_{page:02d}.png"
        fig = plot_cam_grid(list(images), maps, titles, bundle.mean, bundle.std, path=path, boxes=boxes)
        plt.close(fig)
        paths.append(path)
    return paths


def packaged_photos(samples: Sequence, split: str = "test") -> list:
    """The packaged photos (``kind == "photo"``, redistributable: they ship inside installed packages) of a
    split, in manifest order: what the stored notebooks show as examples."""
    return [s for s in samples if s.kind == "photo" and s.split == split]


def photo_licences(samples: Sequence, manifest: str | Path = MANIFEST) -> str:
    """One line per sample: its file and the licence the manifest records for it."""
    table = read_manifest(manifest).set_index("file")["licence"]
    missing = [s.file for s in samples if s.file not in table.index]
    if missing:
        raise ValueError(f"{manifest}: no licence recorded for {missing}")
    return "\n".join(f"{s.file}: {table[s.file]}" for s in samples)
