"""REPORT.md of the study, answer first, and the README's "Results at a glance" block, generated from the rows.

:func:`write_report` writes the figures and CSVs (:func:`helpers.report.present.write_outputs`) and
REPORT.md: the forest plot and one verdict line per thesis claim, the leaderboard, the paired
differences, then every further section (a missing part says "not computed yet" with its command).
:func:`update_readme` replaces the block between the README's two markers with :func:`glance_lines`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt

from ..config import SEED, write_atomic
from ..evaluation.runner import EvalConfig
from ..study.results import Study, shown_folder
from .leaderboard import leaderboard_view, markdown_table
from .present import Answer, answer, identical, leaderboards, model_parts, write_outputs
from .protocol import describe_protocol
from .robustness import EQUIVALENCE_CSV, ROBUST_CSV, equivalence_lines, robust_lines
from .sections import (
    ADAPTIVE_PARTS,
    ARCHITECTURES_FIGURE,
    SANITY_FIGURE,
    adaptive_lines,
    architectures_figure,
    example_lines,
    road_curves,
    road_lines,
    sanity_figure,
    sanity_lines,
    secondary_lines,
    write_adaptive,
)

GLANCE_START, GLANCE_END = "<!-- results-at-a-glance: start -->", "<!-- results-at-a-glance: end -->"


def intro_lines(study: Study, ans: Answer) -> list[str]:
    """The paragraph under the answer: sample, model, chosen a, what is confirmatory, identical methods."""
    rows = study.rows("main")
    same = identical(rows, ans.alpha)
    note = "; ".join(f"{a} = {o}" for a, o in same.items())
    n_val = (f"the {len(study.parts['alpha_head'].facts['part_photos'])} val photos" if study.has("alpha_head")
             else "the val photos")
    model = str(rows["model"].iloc[0]) if "model" in rows else "the model"
    model = {"efficientnet_lite0": "EfficientNet-Lite0"}.get(model, model)
    return [f"Test photos: {study.coverage('main')}, one class each, {model}, every map "
            "explaining the model's top-1 class. The confirmatory family was fixed before the data: hybrid@0.7 vs "
            "Grad-CAM and vs LayerCAM on insertion AUC, rise protocol (primary) and thesis protocol (secondary), 4 "
            f"paired t-tests, Holm-adjusted among themselves; everything else is exploratory. The a chosen on "
            f"{n_val} is {ans.alpha:g}." + (f" Identical maps (up to float rounding), shown once: {note}."
                                                    if note else "")]


def render(study: Study, ans: Answer, lb: str, extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """REPORT.md's text; ``lb`` is the leaderboard CSV's rows of insertion AUC already as Markdown lines."""
    lines = ["# Results: is the hybrid of Grad-CAM and LayerCAM better?", "",
             f"Generated from the study's rows (`{shown_folder(study.folder)}/`) by `helpers.study.report`; every "
             "number comes from a file written by the run.", ""]
    lines += (["## Read first", ""] + ans.first + [""] if ans.first else []) + ["## The answer", "",
             "![The confirmatory family](answer.png)", ""]
    lines += ans.lines + [""] + intro_lines(study, ans) + [""] + robust_lines(ans.robust)
    lines += ["", f"**The deletion claim as equivalence** (exploratory, both protocols; [{EQUIVALENCE_CSV}]"
              f"({EQUIVALENCE_CSV}), the rows above: [{ROBUST_CSV}]({ROBUST_CSV})):", ""]
    lines += equivalence_lines(ans.equivalence)
    lines += ["", "## Leaderboard: insertion AUC (rise protocol) on the photos all methods share", "", lb, "",
              "Rank 1 = best. Differences are paired per photo, 95% BCa CIs, paired t-test Holm-adjusted over the "
              "table (exploratory). Every metric's leaderboard: [leaderboard.csv](leaderboard.csv); the claims' "
              "tests: [confirmatory_tests.csv](confirmatory_tests.csv).", "",
              "## Paired differences against Grad-CAM", "", "![Per-photo differences](paired_differences.png)", "",
              "![Increase in Confidence](proportions.png)", "", "![Mean curves](mean_curves.png)", "",
              "## Why a random map can beat Grad-CAM on one photo", ""] + example_lines(study)
    sections = {"Sanity check: cascading randomisation (Adebayo et al. 2018)": sanity_lines(study)} \
        if study.defines("sanity") else {}
    sections.update(secondary_lines(study))
    if study.defines("road"):
        sections["ROAD: does the verdict survive a metric that does not leak the class?"] = road_lines(study)
    if study.defines(*ADAPTIVE_PARTS):
        sections["Adaptive a: can a per-photo a beat Grad-CAM?"] = adaptive_lines(study)
    sections.update(extra or {})
    for title, body in sections.items():
        lines += ["", f"## {title}", ""] + list(body)
    cfg = EvalConfig(rise_steps=study.spec.rise_steps, thesis_steps=study.spec.thesis_steps)
    lines += ["", "## Protocol", ""] + [f"- {k}: {v}" for k, v in describe_protocol(cfg).items()]
    return "\n".join(lines) + "\n"


def glance_lines(ans: Answer, report: str = "results/REPORT.md", figure: str = "results/answer.png") -> list[str]:
    """The README's "Results at a glance" block: the verdict lines, the figure and the link to the report."""
    return ["## Results at a glance", "", f"Test photos: {ans.coverage}; [{os.path.basename(report)}]({report}) "
            "has everything, generated from the study's files. Read first:", ""] + ans.first + [""] + \
        ans.lines + ["", f"![hybrid@0.7 minus each parent, insertion AUC]({figure})"]


def write_report(study: Study, out: str | Path, extra: Mapping[str, Sequence[str]] | None = None,
                 seed: int = SEED) -> Answer:
    """Figures, CSVs and REPORT.md in ``out``; returns the answer (for the notebook and the README)."""
    out = Path(out)
    write_outputs(study, out, seed)
    if study.has("road"):
        plt.close(road_curves(study, out / "road_curves.png"))
    if model_parts(study):
        plt.close(architectures_figure(study, out / ARCHITECTURES_FIGURE, seed))
    write_adaptive(study, out)
    if study.has("sanity"):
        plt.close(sanity_figure(study, path=out / SANITY_FIGURE))
    ans = answer(study, seed)
    table = leaderboards(study.rows("main"), ans.alpha, ("insertion_auc",), seed)
    lb = "\n".join(markdown_table(leaderboard_view(table)))
    write_atomic(out / "REPORT.md", render(study, ans, lb, extra))
    return ans


def update_readme(readme: str | Path, ans: Answer) -> bool:
    """Replace the README's block between :data:`GLANCE_START` and :data:`GLANCE_END`; False when it has none."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    if GLANCE_START not in text or GLANCE_END not in text:
        return False
    head, rest = text.split(GLANCE_START, 1)
    tail = rest.split(GLANCE_END, 1)[1]
    write_atomic(path, head + GLANCE_START + "\n" + "\n".join(glance_lines(ans)) + "\n" + GLANCE_END + tail)
    return True
