"""Project-wide settings: paths, the quick mode switch and the random seed."""
from __future__ import annotations

import os
from pathlib import Path

#: Repository root (the folder holding the notebooks).
ROOT: Path = Path(__file__).resolve().parent.parent
INPUT_DIR: Path = ROOT / "input_images"
MANIFEST: Path = INPUT_DIR / "manifest.csv"
#: The real-photo manifest (committed; the photos themselves never are, see helpers.data.imagenet).
IMAGENET_MANIFEST: Path = INPUT_DIR / "imagenet_manifest.csv"

#: Where the 800 real ImageNet photos are looked for: ``$XAI_IMAGENET_SAMPLE`` (relative paths are
#: taken from the repository root), else ``../shared/data/imagenet-sample`` beside the repository.
IMAGENET_SAMPLE_ENV: str = "XAI_IMAGENET_SAMPLE"
IMAGENET_SAMPLE_DEFAULT: Path = ROOT.parent / "shared" / "data" / "imagenet-sample"
#: Where they are downloaded to when that folder is absent: ``$XAI_DATA_CACHE``, else ``~/.cache/xai-cam``.
DATA_CACHE_ENV: str = "XAI_DATA_CACHE"
DATA_CACHE_DEFAULT: Path = Path.home() / ".cache" / "xai-cam"

#: Quick mode (``XAI_QUICK=1``): the tests and CI run the notebooks on a small subset.
QUICK: bool = os.environ.get("XAI_QUICK", "0") not in ("", "0", "false", "False")

#: Where the notebooks write. Quick runs go to ``results/quick/`` (not tracked), so a test run
#: never overwrites the full results that ``make reproduce`` wrote.
RESULTS_DIR: Path = ROOT / "results" / "quick" if QUICK else ROOT / "results"

#: The one seed every random choice in the project derives from.
SEED: int = 0
