"""Everything the study's files say, written again: ``python -m helpers study report``.

:func:`write_all` writes REPORT.md, its figures and CSVs (:func:`helpers.report.render.write_report`) with
the localisation sections read from the composites' tables notebook 5 wrote (``<out>/composites/``), and
the README's "Results at a glance" block; notebook 5 calls it after computing those tables (and opens
the study with :func:`open_study`). Reading the
study checks every part's hash against the code from the files alone (no model is loaded once each
model's identity is cached: :func:`helpers.study.results.known_identity`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from ..cam.models import load_model
from ..config import QUICK, RESULTS_DIR, ROOT, SEED
from ..study.results import STUDY_DIR, Study, load_study
from ..study.run import run_study
from ..study.spec import QUICK as QUICK_SPEC
from .leaderboard import localisation_table, markdown_table
from .present import Answer, identical
from .render import update_readme, write_report
from .sections import consistency_lines

#: The composites' tables (notebook 5 computes them; the report reads them).
LOCALISATION_ROWS, LOCALISATION_SUMMARY = "composites/localisation.csv", "composites/localisation_summary.csv"
LOCALISATION_TITLE = "Localisation on the composites (separate, controlled experiment)"


def localisation_sections(study: Study, rows: pd.DataFrame, summary: pd.DataFrame) -> dict[str, list[str]]:
    """The report's localisation section (the composites' summary, which methods were left out as identical)
    and its consistency notes, from the composites' rows and summary."""
    same = identical(study.rows("main"), float(study.parts["main"].facts["alpha"]))
    left_out = (f"; {', '.join(same)} left out (same maps as {', '.join(sorted(set(same.values())))})"
                if same else "")
    notes = [f"n = {rows.image.nunique()} test images; each map explains the label; 95% BCa CIs resample the object "
             f"photos. From composites/localisation_summary.csv{left_out}.", ""]
    return {LOCALISATION_TITLE: notes + markdown_table(localisation_table(summary)),
            "Consistency notes": consistency_lines(rows)}


def write_all(study: Study, out: str | Path, readme: str | Path | None = None) -> Answer:
    """REPORT.md, its figures and CSVs in ``out`` (with the localisation sections where ``out`` holds the
    composites' tables) and, given a ``readme``, its "Results at a glance" block; returns the answer."""
    out = Path(out)
    extra = {}
    if (out / LOCALISATION_ROWS).is_file() and (out / LOCALISATION_SUMMARY).is_file():
        extra = localisation_sections(study, pd.read_csv(out / LOCALISATION_ROWS),
                                      pd.read_csv(out / LOCALISATION_SUMMARY))
    ans = write_report(study, out, extra)
    if readme is not None:
        update_readme(readme, ans)
    return ans


def open_study() -> tuple[Study, Any]:
    """Notebook 5's opening: the seed, pandas' display width, the study (in quick mode the quick definition
    computed from scratch, else the committed one, each part checked against the code; what is missing or
    unchecked is printed) and the default model."""
    torch.manual_seed(SEED)
    pd.set_option("display.width", 160)
    if QUICK:   # resumable through the per-batch cache
        study = load_study(run_study(QUICK_SPEC, RESULTS_DIR / "study"), QUICK_SPEC)
    else:
        study = load_study(STUDY_DIR, "full")
    print(f"study {study.spec.name!r} in {study.folder}: parts {', '.join(study.parts)}")
    print("not computed yet:", ", ".join(p.name for p in study.spec.parts if not study.has(p.name)) or "none")
    for name, why in study.unverified.items():
        print(f"part {name} not checked here ({why}): shown as committed")
    return study, load_model()


def command(argv: Sequence[str], parser: type[argparse.ArgumentParser] = argparse.ArgumentParser,
            folder: Callable[[str], Path] = Path) -> int:
    """``python -m helpers study report [--dir DIR] [--out DIR] [--spec full] [--readme README.md]``: the study in
    ``--dir`` (each part checked against the code) written to ``--out``; the README's block is rewritten when
    ``--out`` is the repository's results folder, or as ``--readme`` says. The command line passes its parser
    class (one-line errors) and its check of a writable ``folder``."""
    p = parser(prog="python -m helpers study report",
               description="REPORT.md, its figures and CSVs and the README's results block, from the files.")
    p.add_argument("--dir", default="results/study", help="the study folder")
    p.add_argument("--out", default="results", help="where REPORT.md, the figures and the CSVs go")
    p.add_argument("--spec", default="full", help="full, quick, or a TOML study definition")
    p.add_argument("--readme", help="the README whose results block is rewritten (default: README.md when --out "
                                    "is results/)")
    args = p.parse_args(list(argv))
    out = Path(folder(args.out))
    readme = args.readme or (ROOT / "README.md" if out.resolve() == (ROOT / "results").resolve() else None)
    write_all(load_study(args.dir, args.spec), out, readme)
    print(f"wrote REPORT.md, its figures and CSVs to {out}" + (f"; updated {readme}" if readme else ""))
    return 0
