"""The study presented answer first: the confirmatory forest plot and verdicts, the leaderboard, the figures.

Everything here is computed from the study's rows (:class:`helpers.study.results.Study`): the
confirmatory family (:data:`helpers.evaluation.policy.CONFIRMATORY_TESTS`) on the ``main`` part's
photos, a leaderboard per metric on the photos all methods share, per-photo paired differences, and
the worked example's photo. :func:`write_outputs` writes the figures and CSVs that REPORT.md links.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..config import SEED, progress_bar, write_atomic
from ..evaluation.policy import (
    CONFIRMATORY_TESTS,
    GC,
    HYBRID,
    HYBRID_VAL,
    LC,
    PRESET_COLUMNS,
    ROUNDING_BOUND,
    ROUNDING_SHARE,
    THESIS_ALPHA,
    aliases,
    parent_at,
)
from ..evaluation.runner import FLOORS
from ..evaluation.stats import comparison_table
from ..study.results import Study
from .figures import forest_plot, mean_curves, paired_differences, proportions
from .leaderboard import leaderboard
from .robustness import (
    EQUIVALENCE_CSV,
    ROBUST_CSV,
    SORTED_FIGURE,
    equivalence_line,
    equivalence_table,
    margin_gap,
    robust_table,
    sorted_differences,
)
from .verdict import NAMES, TIME_TOLERANCE, answer_lines, replication_line

#: The continuous metrics of the main part shown as leaderboards and paired differences.
SHOWN: tuple[str, ...] = ("insertion_auc", "deletion_auc", "insertion_auc_thesis", "deletion_auc_thesis",
                          "average_drop", "adcc")
#: 0/1 metrics, shown as proportions with CIs.
PROPORTIONS: tuple[str, ...] = ("increase_in_confidence",)
#: Where the time claim is judged (the study's rows hold no timings: time depends on the machine).
TIMING_NOTE = ("not judged from the study's rows, which hold no timings (they depend on the machine): "
               "`python -m helpers.bench` measures the CAM pass; the README's benchmark quotes it.")
FLOAT_FORMAT = "%.8g"
#: EfficientNet-Lite0's published top-1 on ImageNet's validation set, in % (the TF-Lite EfficientNet-Lite release).
LITE0_PUBLISHED_TOP1 = 75.1
#: The confirmatory tests on the thesis' model for whoever has torchvision's ResNet-50 file (V1, the thesis'):
#: the 600 test photos' labels from the manifest, then the command line's ``evaluate`` (both presets, so the
#: thesis' 10 steps; ``--steps`` left at the protocols' own).
RESNET50_COMMANDS: tuple[str, ...] = (
    "python -c \"import pandas as pd; m = pd.read_csv('input_images/imagenet_manifest.csv'); m[m.split == 'test']"
    ".rename(columns={'label_idx': 'label'})[['file', 'label']].to_csv('test_labels.csv', index=False)\"",
    "python -m helpers evaluate --images \"$(python -c 'from helpers.data.imagenet import locate; print(locate())')\" "
    "--labels test_labels.csv --model resnet50 --weights /path/to/resnet50-0676ba61.pth --methods "
    "gradcam,layercam,hybrid --alpha 0.7 --no-timing --out results/resnet50")
#: The parts that repeat the thesis methods on other models (Lite0's head is the ``main`` part).
MODEL_PARTS: tuple[str, ...] = ("lite1", "lite2")


def model_parts(study: Study) -> list[str]:
    """The :data:`MODEL_PARTS` this study holds (none: no other model to compare with)."""
    return [name for name in MODEL_PARTS if study.has(name)]


@dataclass
class Answer:
    """The answer that opens notebook 5, REPORT.md and the README."""

    tests: pd.DataFrame      # the confirmatory family (plus the exploratory deletion tests the claims read)
    lines: list[str]         # one verdict line per thesis claim
    n: int                   # photos
    alpha: float             # the a chosen on the val photos
    coverage: str            # "600 photos", or "420 of 600 photos (a partial part ...)" while shards run
    robust: pd.DataFrame     # what a typical photo shows, per confirmatory comparison (exploratory)
    first: list[str]         # what to read first: the photos' accuracy, the model not run, what hybrid@val is
    equivalence: pd.DataFrame  # the deletion claim as two one-sided tests (exploratory)


def identical(rows: pd.DataFrame, alpha: float) -> dict[str, str]:
    """{method: the method it equals}: metrics equal up to float rounding (:func:`aliases`), and
    hybrid@val by definition when the chosen a is 1, 0 or 0.7 (Grad-CAM, LayerCAM, hybrid@0.7)."""
    same = aliases(rows, share=ROUNDING_SHARE, bound=ROUNDING_BOUND)
    by_definition = parent_at(alpha) or (HYBRID if float(alpha) == THESIS_ALPHA else None)
    if by_definition is not None and HYBRID_VAL in set(rows["method"]):
        same[HYBRID_VAL] = by_definition
    return same


def confirmatory(rows: pd.DataFrame, seed: int = SEED) -> pd.DataFrame:
    """hybrid@0.7 vs Grad-CAM and vs LayerCAM on both presets' insertion AUC (the confirmatory family, Holm
    among the 4) and deletion AUC (exploratory), paired on the photos both have."""
    metrics = [c for cols in PRESET_COLUMNS.values() for c in cols]
    return comparison_table(rows, metrics, [(HYBRID, GC), (HYBRID, LC)], seed=seed, confirmatory=CONFIRMATORY_TESTS)


def timing_note(benchmark: str | Path) -> str:
    """The time claim judged on the benchmark's CAM pass (``results/benchmark.csv`` of ``python -m
    helpers.bench``): the hybrid's ms per image over Grad-CAM's at each batch it measured, against
    :data:`TIME_TOLERANCE`; :data:`TIMING_NOTE` where there is no benchmark."""
    path = Path(benchmark)
    if not path.is_file():
        return TIMING_NOTE
    table = pd.read_csv(path)
    ms = table.dropna(subset=["ms_per_image"]).set_index(["measure", "batch"])["ms_per_image"]
    hybrid = HYBRID.split("@")[0]                                       # the benchmark times the default a
    batches = [b for m, b in ms.index if m == hybrid and (GC, b) in ms.index]
    if not batches:
        return TIMING_NOTE
    ratios = {b: ms[hybrid, b] / ms[GC, b] for b in batches}
    word = "HOLDS" if all(r <= TIME_TOLERANCE for r in ratios.values()) else "DOES NOT HOLD"
    numbers = "; ".join(f"batch {b:g}: hybrid {ms[hybrid, b]:.1f} vs Grad-CAM {ms[GC, b]:.1f} ms per image, "
                        f"ratio {r:.2f}" for b, r in ratios.items())
    return (f"{word} on the benchmark (ratio <= {TIME_TOLERANCE}; the study's rows hold no timings): {numbers} "
            f"({table['taken'].iloc[0]}; `python -m helpers.bench`, results/{path.name}).")


def read_first(rows: pd.DataFrame, alpha: float) -> list[str]:
    """The caveats that open the report, from the main part's rows: Lite0's top-1 on the photos against its
    published one (Lite0 only), that ResNet-50 was not run with the commands that run it (unless it was), and
    which parent hybrid@val is (when the chosen a makes it one)."""
    model = str(rows["model"].iloc[0]) if "model" in rows else ""
    lines = []
    if model == "efficientnet_lite0" and "correct" in rows:
        per_photo = rows.drop_duplicates("image")["correct"].astype(bool)
        lines.append(f"- **The photos are probably ImageNet training images**: EfficientNet-Lite0 classifies "
                     f"{int(per_photo.sum())} of the {len(per_photo)} test photos correctly ({per_photo.mean():.1%} "
                     f"top-1) against its published {LITE0_PUBLISHED_TOP1}% on ImageNet's validation set. The maps "
                     "are compared on the same photos; how the model generalises is not measured here.")
    if model != "resnet50":
        lines.append("- **The thesis' own model, ResNet-50, was not run**: no ResNet-50 weights install on these "
                     "machines. Whoever has torchvision's weight file runs the four confirmatory tests on it, on the "
                     "same test photos, under both protocols (the thesis' 10 steps among them), with "
                     "`" + "` and then `".join(RESNET50_COMMANDS) + "` (REPORT.md and confirmatory_tests.csv in "
                     "results/resnet50).")
    parent = parent_at(alpha)
    if parent is not None:
        lines.append(f"- **The val rule chose a = {alpha:g}, so hybrid@val is {NAMES[parent]}**: its maps are "
                     f"{NAMES[parent]}'s, and it has no result of its own.")
    return lines


def answer(study: Study, seed: int = SEED) -> Answer:
    """The confirmatory tests and the verdict lines, from the ``main`` part; the time claim from the
    benchmark beside the study folder (:func:`timing_note`); where the study has other models, one
    exploratory line on whether the answer replicates there (:func:`architecture_tests`)."""
    def compute() -> Answer:
        rows = study.rows("main")
        tests = confirmatory(rows, seed)
        equivalence = equivalence_table(rows)
        lines = answer_lines(tests, equivalence_line(equivalence, margin_gap(rows)),
                             timing_note(study.folder.parent / "benchmark.csv"))
        if model_parts(study):
            lines.append(replication_line(architecture_tests(study, seed=seed)))
        alpha = float(study.parts["main"].facts["alpha"])
        return Answer(tests, lines, int(rows["image"].nunique()), alpha, study.coverage("main"),
                      robust_table(rows, tests, seed=seed), read_first(rows, alpha), equivalence)

    return study.cached(f"answer {seed}", compute)


def architecture_tests(study: Study, metric: str = "insertion_auc", seed: int = SEED) -> pd.DataFrame:
    """hybrid@0.7 and LayerCAM minus Grad-CAM on each model of the study: Lite0's head (``main``), then the
    :data:`MODEL_PARTS` present. The paired t-test rows of
    :func:`~helpers.evaluation.stats.comparison_table` on the photos each model's pair shares, Holm-adjusted
    within each model; method names carry the model (``"Grad-CAM (lite1)"``), column ``model`` names it.
    Computed once per study object (the answer and the report's figure both read it)."""
    def compute() -> pd.DataFrame:
        tables = []
        for name in ("main", *MODEL_PARTS):
            if not study.has(name):
                continue
            model = study.spec.part(name).model
            tag = model.removeprefix("efficientnet_")
            label = {m: f"{NAMES.get(m, m)} ({tag})" for m in (GC, LC, HYBRID)}
            rows = study.rows(name)
            rows = rows[rows["method"].isin(label)]
            rows = rows.assign(method=rows["method"].map(label))
            table = comparison_table(rows, [metric], [(label[HYBRID], label[GC]), (label[LC], label[GC])], seed=seed)
            tables.append(table[table["test"] == "paired t-test"].assign(model=model))
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()

    return study.cached(f"architecture_tests {metric} {seed}", compute)


def confirmatory_rows(tests: pd.DataFrame) -> pd.DataFrame:
    """The 4 confirmatory t-tests in the family's order (rise before thesis; Grad-CAM before LayerCAM)."""
    conf = tests[tests["family"] == "confirmatory"].set_index(["b", "metric"])
    return conf.loc[[(b, m) for a, b, m in CONFIRMATORY_TESTS]].reset_index()


def distinct_methods(rows: pd.DataFrame, alpha: float) -> list[str]:
    """The main part's methods in definition order, without those identical to another."""
    same = identical(rows, alpha)
    return [m for m in dict.fromkeys(rows["method"]) if m not in same]


def leaderboards(rows: pd.DataFrame, alpha: float, metrics: tuple[str, ...] = SHOWN + PROPORTIONS,
                 seed: int = SEED) -> pd.DataFrame:
    """:func:`leaderboard` of every metric on the distinct methods (identical ones folded, noted), long format."""
    same = identical(rows, alpha)
    tables = [leaderboard(rows, metric, seed=seed, same=same)
              for metric in progress_bar(metrics, desc="leaderboards", disable=len(metrics) < 2)]
    return pd.concat(tables, ignore_index=True)


def difference_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """Every CAM method against Grad-CAM, and the hybrid against LayerCAM too (the floors are in the leaderboard:
    their differences are 100 times larger and would hide the others')."""
    pairs = [(m, GC) for m in methods if m != GC and m not in FLOORS]
    return pairs + [(HYBRID, LC)] if HYBRID in methods and LC in methods else pairs


def curve_groups(methods: list[str]) -> list[list[str]]:
    """Panels of at most 4 methods: the thesis' three with the random floor, then Grad-CAM with the others by 3."""
    first = [m for m in (GC, LC, HYBRID, "random") if m in methods]
    rest = [m for m in methods if m not in first]
    return [first] + [[GC, *rest[i:i + 3]] for i in range(0, len(rest), 3)]


def worked_example(rows: pd.DataFrame, metric: str = "insertion_auc") -> tuple[str, float, int]:
    """The photo whose Grad-CAM-minus-random ``metric`` difference is the median one (the lower middle for an
    even count): (photo, its difference, how many photos random beats Grad-CAM on)."""
    wide = rows[rows["method"].isin([GC, "random"])].pivot(index="image", columns="method", values=metric)
    diff = (wide[GC] - wide["random"]).sort_values(kind="stable")
    photo = diff.index[(len(diff) - 1) // 2]
    return str(photo), float(diff[photo]), int((diff < 0).sum())


def write_outputs(study: Study, out: str | Path, seed: int = SEED) -> dict[str, Path]:
    """answer.png, leaderboard.csv, confirmatory_tests.csv, paired_differences.png, proportions.png and
    mean_curves.png in ``out`` (returns their paths by name), and the answer's robustness files
    (:data:`~helpers.report.robustness.SORTED_FIGURE`, ``ROBUST_CSV``, ``EQUIVALENCE_CSV``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, ans = study.rows("main"), answer(study, seed)
    methods = distinct_methods(rows, ans.alpha)
    names = (("answer", "png"), ("leaderboard", "csv"), ("confirmatory_tests", "csv"), ("paired_differences", "png"),
             ("proportions", "png"), ("mean_curves", "png"))
    paths = {k: out / f"{k}.{ext}" for k, ext in names}
    plt.close(forest_plot(confirmatory_rows(ans.tests), paths["answer"]))
    plt.close(sorted_differences(rows, path=out / SORTED_FIGURE))
    for name, table in ((ROBUST_CSV, ans.robust), (EQUIVALENCE_CSV, ans.equivalence)):
        write_atomic(out / name, table.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))
    write_atomic(paths["confirmatory_tests"], ans.tests.to_csv(index=False, float_format=FLOAT_FORMAT,
                                                               lineterminator="\n"))
    write_atomic(paths["leaderboard"], leaderboards(rows, ans.alpha, seed=seed).to_csv(
        index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))
    plt.close(paired_differences(rows, SHOWN, difference_pairs(methods), paths["paired_differences"], seed))
    fig, axes = plt.subplots(1, len(PROPORTIONS), figsize=(6 * len(PROPORTIONS), 0.35 * len(methods) + 1.4),
                             squeeze=False)
    for ax, metric in zip(axes.ravel(), PROPORTIONS, strict=True):
        proportions(rows, metric, methods, ax)
    fig.tight_layout()
    fig.savefig(paths["proportions"], dpi=100)
    plt.close(fig)
    plt.close(mean_curves(rows, curve_groups(methods), path=paths["mean_curves"]))
    return paths
