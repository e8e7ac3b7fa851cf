"""The one call that opens a lecture notebook: seed, display settings, the model, the samples, the worked photo."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..cam.bundle import ModelBundle
from ..cam.models import load_model
from ..config import QUICK, RESULTS_DIR, SEED
from ..data.images import Sample, load_samples

#: The model the lecture notebooks teach with: the study's model, whose layer names the prose uses.
LESSON_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class Lesson:
    """What a lecture notebook needs: the model, the dataset's samples, its figure folder and one worked photo."""

    bundle: ModelBundle
    samples: list[Sample]
    fig_dir: Path
    photo: Sample

    @property
    def x(self) -> torch.Tensor:
        """The worked photo as a batch of one (1, 3, H, W)."""
        return self.photo.tensor[None]

    @property
    def c(self) -> int:
        """The class the dataset asserts for the worked photo (the one the notebook explains)."""
        return self.photo.label_idx


def packaged_photo(samples: list[Sample], name: str) -> Sample:
    """The packaged (redistributable) photo whose file name contains ``name``; an error lists the valid ones."""
    photos = [s for s in samples if s.kind == "photo"]
    found = [s for s in photos if name in s.file]
    if not found:
        raise ValueError(f"no packaged photo matches {name!r}; valid: {', '.join(s.file for s in photos)}")
    return found[0]


def display_settings() -> None:
    """Seeded torch, short tensor printing, fixed 4-decimal pandas floats, and JPEG figures when in Jupyter."""
    torch.manual_seed(SEED)
    torch.set_printoptions(precision=4, sci_mode=False)
    pd.set_option("display.float_format", "{:.4f}".format)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:     # plain Python: nothing to configure
        return
    if get_ipython() is not None:
        set_matplotlib_formats("jpeg")


def lesson(folder: str, photo: str = "chelsea", model: str = LESSON_MODEL, root: str | Path = RESULTS_DIR) -> Lesson:
    """Open a lecture notebook: :func:`display_settings`, load ``model`` and the dataset's samples, create
    ``root/folder`` for the figures and pick the packaged photo ``photo``; prints one line saying so."""
    display_settings()
    bundle = load_model(model)
    samples = load_samples(bundle)
    fig_dir = Path(root) / folder
    fig_dir.mkdir(parents=True, exist_ok=True)
    found = Lesson(bundle, samples, fig_dir, packaged_photo(samples, photo))
    print(f"model {bundle.name} (CAM layer {bundle.target_layer!r}), {len(samples)} images; worked photo "
          f"{found.photo.file} as '{found.photo.label_name}'; quick mode: {QUICK}")
    return found
