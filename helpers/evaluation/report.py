"""Evaluation outputs: the CSV tables, the comparison figure and REPORT.md with verdicts from the numbers.

Every verdict in the report is computed here from the tables (:func:`thesis_claims`), never
written by hand, so the text changes when the data does. The metric CSVs are deterministic
(same input -> byte-identical files); timings are the only run-dependent numbers and live in
their own file, ``evaluation_timings.csv``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from ..config import SEED, write_atomic
from . import metrics as M
from .figures import plot_comparison
from .policy import CONFIRMATORY_TESTS, GC, HYBRID, HYBRID_VAL, LC, PRESET_COLUMNS, aliases, comparison_pairs
from .runner import LOCALISATION, METRICS, SMALL_BOX_FRACTION, EvalConfig, Evaluation
from .stats import CONFIRMATORY, comparison_table, summary_table
from .verdict import caveats, claim_lines, find_test, floor_beaten, fmt_test, thesis_claims

FLOAT_FORMAT = "%.8g"
#: The thesis' numbers (10 images, ResNet-50, its 10-step protocol) for the report.
THESIS_NUMBERS = {"insertion": {HYBRID: 0.1145, GC: 0.1140, LC: 0.1066}, "p": {GC: 0.043, LC: 0.002}}


def describe_protocol(cfg: EvalConfig, size: int = 224) -> dict[str, str]:
    """Plain-language statement of exactly which protocol ``cfg`` runs (for REPORT.md), at ``size`` x ``size``."""
    rise, thesis = M.PRESETS["rise"], M.PRESETS["thesis"]
    per_step = size * size // cfg.rise_steps
    rise_name = ("RISE's protocol" if cfg.rise_steps == rise["steps"]
                 else "RISE's protocol EXCEPT its step count (a shortened curve: not RISE's numbers)")
    return {
        "explained class": ("the model's top-1 prediction (as RISE's and the CAM papers' code); rows record the "
                            "label and whether the prediction equals it" if cfg.target == "top1"
                            else "the image's label (not necessarily the prediction)"),
        "insertion/deletion, rise preset": (
            f"{rise_name}: {cfg.rise_steps} steps of {per_step} pixels at {size}x{size} (RISE: 28 steps of "
            f"224*8); deletion to the {rise['deletion_substrate']} tensor of normalised space; insertion over the "
            "normalised image blurred per channel with scipy's gaussian_filter of an 11x11 delta (sigma 5), zero "
            "padding; softmax probability; AUC = (sum - first/2 - last/2) / (n - 1)"),
        "insertion/deletion, thesis preset": (f"{cfg.thesis_steps} steps, insertion over the "
                                              f"{thesis['insertion_substrate']} tensor, deletion to it"),
        "pixel ranking": (f"ties (values within {M.TIE_RESOLUTION:g} x the map's maximum) broken by a seeded random "
                          "permutation per image, the same for every method"),
        "Average Drop / Increase in Confidence / ADCC": "explanation image = map x the " + (
            "normalised input (as TorchCAM, pytorch-grad-cam and the ADCC code)"
            if cfg.explanation_space == "normalised" else "input in pixel space (black where the map is 0)")
        + "; the random floor re-explains with a fresh seed",
        "map scaling": ("each map divided by its maximum" if cfg.normalise == "max"
                        else "each map min-max scaled to [0, 1]"),
        "localisation": (f"pointing game: one maximiser per map (ties: first in the image's seeded order), "
                         f"tolerance {cfg.tolerance:g} px in the original image's pixels (times the resize's "
                         f"scale in the crop); energy pointing game on all boxes and on "
                         f"boxes under {SMALL_BOX_FRACTION:g} of the image; box IoU threshold {cfg.iou_threshold:g} "
                         "of the maximum; CIs resample source photos"),
    }


def statistical_tests(results: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """The tests table: every pair x metric on all images (the confirmatory family plus the exploratory
    tests), and the confirmatory comparisons again on the correctly classified images only (their own
    exploratory family), with a ``subset`` column."""
    tables = [comparison_table(results, METRICS, comparison_pairs(labels, results), seed=SEED,
                               confirmatory=CONFIRMATORY_TESTS).assign(subset="all")]
    if "correct" in results and results.correct.any() and {HYBRID, GC, LC} <= set(labels):
        correct = results[results.correct.astype(bool)]
        tables += [comparison_table(correct, [PRESET_COLUMNS[p][0] for p in PRESET_COLUMNS],
                                    [(HYBRID, GC), (HYBRID, LC)], seed=SEED).assign(subset="correct")]
    table = pd.concat(tables, ignore_index=True)
    return table[["subset", *[c for c in table.columns if c != "subset"]]]


def write_tables(ev: Evaluation, out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The four CSVs, each atomically, in order: the measured tables are on disk before any statistic runs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with_photo = ev.results.assign(source_photo=ev.results.source.astype(str).str.split("+").str[0])
    class_col = "class_idx" if "class_idx" in ev.results else "label_idx"
    makers = {"evaluation_results": lambda: ev.results, "evaluation_timings": lambda: ev.timings,
              "summary_statistics": lambda: summary_table(with_photo, METRICS, cluster_col="source_photo",
                                                          class_col=class_col, cluster_metrics=LOCALISATION),
              "statistical_tests": lambda: statistical_tests(ev.results, [s.label for s in ev.methods])}
    tables = {}
    for name, make in makers.items():
        tables[name] = make()
        write_atomic(out / f"{name}.csv",
                     tables[name].to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))
    return tables


def distinct_sources(results: pd.DataFrame) -> int:
    """Number of distinct source photos (a composite's ``source`` lists its sources joined by '+')."""
    return len({s for src in results.drop_duplicates("image").source for s in str(src).split("+")})


def design_lines(tests: pd.DataFrame) -> list[str]:
    """How the tests are organised: the confirmatory family (fixed before the data) and the exploratory rest."""
    conf = tests[tests.family == CONFIRMATORY]
    rest = tests[tests.family != CONFIRMATORY]
    return [f"- Confirmatory family (fixed before the data, {len(conf)} paired t-tests, Holm-adjusted among "
            "themselves): " + "; ".join(f"{r.a} vs {r.b} on {r.metric}" for r in conf.itertuples()) + ".",
            f"- Exploratory: the other {len(rest)} tests (every other pair x metric, the Wilcoxon tests, and the "
            "main comparison on the correctly classified images), Holm-adjusted per test and subset, labelled "
            "`exploratory` in statistical_tests.csv. They suggest, they do not confirm.",
            "- CIs: BCa bootstrap of the mean paired difference (scipy.stats.bootstrap, 10,000 resamples, seeded); "
            "each test also reports the smallest mean difference a paired t-test detects with 80% power at its n "
            "(from the observed SD of the differences)."]


def correct_lines(tests: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """The main comparison on the images whose top-1 prediction equals the label (if recorded)."""
    if "subset" not in tests or not (tests.subset == "correct").any():
        return ["(No per-image prediction recorded, or no image classified correctly: section skipped.)"]
    n_ok, n = results[results.correct.astype(bool)].image.nunique(), results.image.nunique()
    lines = [f"{n_ok} of {n} images have top-1 prediction = label; the explained class and the label coincide "
             "there (exploratory, Holm over these 4 comparisons).", ""]
    for preset, (ins, _) in PRESET_COLUMNS.items():
        for other in (GC, LC):
            t = find_test(tests, HYBRID, other, ins, subset="correct")
            w = find_test(tests, HYBRID, other, ins, "wilcoxon", subset="correct")
            lines.append(f"- [{preset} protocol] {HYBRID} vs {other}, insertion AUC: {fmt_test(t, w)}")
    return lines


def render_report(ev: Evaluation, tables: dict[str, pd.DataFrame], alpha: float, facts: dict[str, str],
                  sections: Mapping[str, Sequence[str]] | None = None) -> str:
    """REPORT.md text: setup, the protocol that ran, each claim with our numbers and verdict, the
    correctly classified subset, further ``sections`` (title -> Markdown lines, e.g. other layers or
    a separate experiment), floors, caveats, files."""
    results, tests = tables["evaluation_results"], tables["statistical_tests"]
    n_sources = distinct_sources(results)
    claims = thesis_claims(results, tests, tables["evaluation_timings"])
    val_alias = aliases(results, METRICS).get(HYBRID_VAL) is not None
    lines = ["# Evaluation report (generated from the numbers by helpers.evaluation.report)", "",
             f"Test split: **n = {results.image.nunique()} images** from **{n_sources} distinct source photos** "
             f"({', '.join(f'{k}: {v}' for k, v in results.drop_duplicates('image').kind.value_counts().items())}). "
             f"Methods: {', '.join(s.label for s in ev.methods)}. hybrid@val uses a = {alpha:g} chosen on the "
             "validation split (notebook 4).", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    if ev.config is not None:
        lines += ["", "## Protocol that ran", ""] + [f"- {k}: {v}" for k, v in describe_protocol(ev.config).items()]
    lines += ["", "## Statistical design", ""] + design_lines(tests)
    lines += ["", "The thesis reported (10 images, ResNet-50, 10-step zero-substrate protocol): insertion AUC hybrid "
              f"{THESIS_NUMBERS['insertion'][HYBRID]} vs Grad-CAM {THESIS_NUMBERS['insertion'][GC]} vs LayerCAM "
              f"{THESIS_NUMBERS['insertion'][LC]}, p = {THESIS_NUMBERS['p'][GC]} / {THESIS_NUMBERS['p'][LC]}.", "",
              "## The thesis' claims on our data", ""] + claim_lines(claims)
    lines += ["", "## The main comparison on the correctly classified images", ""] + correct_lines(tests, results)
    lines += ["", f"## The same claims for the hybrid at the validation-chosen a = {alpha:g}", ""]
    if val_alias:
        lines += [f"(hybrid@val gives the same numbers as {aliases(results, METRICS)[HYBRID_VAL]} on every image and "
                  "metric: "
                  "its comparisons are not repeated.)"]
    else:
        lines += claim_lines(thesis_claims(results, tests, tables["evaluation_timings"], hybrid=HYBRID_VAL))
    for title, body in (sections or {}).items():
        lines += ["", f"## {title}", ""] + list(body)
    lines += ["", "## Against the sanity floors (means on the floor's images; does the method beat the floor?)", ""]
    for metric in ("insertion_auc", "deletion_auc", "pointing_game", "energy_pointing_game"):
        beat = {m: b for m in (GC, LC, HYBRID, HYBRID_VAL) if (b := floor_beaten(results, metric, m))}
        lines.append(f"- {metric}: " + ("; ".join(f"{m} beats " + (", ".join(f for f, ok in b.items() if ok) or "none")
                                                  for m, b in beat.items())
                                        or "not measured on these images (no boxes; localisation has its own section)"))
    lines += ["", "## What a reader should NOT conclude", ""] + [f"- {c}" for c in caveats(results, claims, n_sources)]
    if ev.failures:
        lines += ["", "## Images that failed (skipped)", ""] + [f"- {f}: {msg}" for f, msg in ev.failures]
    lines += ["", "## Files", "", "- evaluation_results.csv: one row per image x method, every metric, the explained "
              "class, the prediction and whether it is correct (deterministic)",
              "- evaluation_timings.csv: time per image x method (run-dependent, kept apart)",
              "- summary_statistics.csv: n, mean, std, min, max, 95% t-CI per method x metric; for the localisation "
              "metrics also the 95% BCa CI resampling source photos (a composite counts under its object's photo) "
              "and the mean of per-class means (Zhang et al.'s pointing-game accuracy)",
              "- statistical_tests.csv: paired t-test and Wilcoxon per pair x metric x subset; `family` says "
              "confirmatory or exploratory (Holm-adjusted within its family and test), Cohen's d_z, 95% BCa "
              "bootstrap CI of the mean difference, SD of the differences, smallest difference detectable with "
              "80% power", "- comparison_plots.png", ""]
    return "\n".join(lines)


def write_all(ev: Evaluation, out_dir: str | Path, alpha: float, facts: dict[str, str],
              sections: Mapping[str, Sequence[str]] | None = None) -> dict[str, pd.DataFrame]:
    """Every output: the four CSVs, comparison_plots.png and REPORT.md in ``out_dir``."""
    tables = write_tables(ev, out_dir)
    plt.close(plot_comparison(ev, METRICS, path=Path(out_dir) / "comparison_plots.png"))
    write_atomic(Path(out_dir) / "REPORT.md", render_report(ev, tables, alpha, facts, sections))
    return tables
