"""Project-wide settings: paths, the quick mode switch and the random seed."""
from __future__ import annotations

import os
from pathlib import Path

#: Repository root (the folder holding the notebooks).
ROOT: Path = Path(__file__).resolve().parent.parent
INPUT_DIR: Path = ROOT / "input_images"
MANIFEST: Path = INPUT_DIR / "manifest.csv"

#: Quick mode (``XAI_QUICK=1``): the tests and CI run the notebooks on a small subset.
QUICK: bool = os.environ.get("XAI_QUICK", "0") not in ("", "0", "false", "False")

#: Where the notebooks write. Quick runs go to ``results/quick/`` (not tracked), so a test run
#: never overwrites the full results that ``make reproduce`` wrote.
RESULTS_DIR: Path = ROOT / "results" / "quick" if QUICK else ROOT / "results"

#: The one seed every random choice in the project derives from.
SEED: int = 0
