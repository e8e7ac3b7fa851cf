"""Evaluation outputs: the CSV tables, the comparison figure and REPORT.md with verdicts from the numbers.

Every verdict in the report is computed here from the tables (:func:`thesis_claims`), never
written by hand, so the text changes when the data does. The metric CSVs are deterministic
(same input -> byte-identical files); timings are the only run-dependent numbers and live in
their own file, ``evaluation_timings.csv``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import SEED, atomic_file, write_atomic
from .runner import FLOORS, LOCALISATION, LOWER_IS_BETTER, METRICS, THESIS_ALPHA, Evaluation, describe_protocol
from .stats import CONFIRMATORY, comparison_table, summary_table

HYBRID, HYBRID_VAL, GC, LC = f"hybrid@{THESIS_ALPHA}", "hybrid@val", "gradcam", "layercam"
ALPHA_LEVEL = 0.05
#: "No time overhead": the hybrid's median time per image at most this multiple of Grad-CAM's.
TIME_TOLERANCE = 1.10
FLOAT_FORMAT = "%.8g"
#: The thesis' numbers (10 images, ResNet-50, its 10-step protocol) for the report.
THESIS_NUMBERS = {"insertion": {HYBRID: 0.1145, GC: 0.1140, LC: 0.1066}, "p": {GC: 0.043, LC: 0.002}}
PRESET_COLUMNS = {"rise": ("insertion_auc", "deletion_auc"), "thesis": ("insertion_auc_thesis", "deletion_auc_thesis")}
#: The confirmatory family, fixed before the data: hybrid@0.7 vs Grad-CAM and vs LayerCAM on insertion
#: AUC, under the rise preset (primary) and the thesis preset (secondary) -- 4 paired t-tests, Holm-adjusted
#: among themselves. Every other test is exploratory.
CONFIRMATORY_TESTS: tuple[tuple[str, str, str], ...] = tuple(
    (HYBRID, other, PRESET_COLUMNS[preset][0]) for preset in ("rise", "thesis") for other in (GC, LC))
#: The subsets the tests run on: every image, and (the main comparison only) the correctly classified ones.
SUBSETS = ("all", "correct")
#: Two methods whose metrics differ by less than this on every image and metric are the same method.
ALIAS_TOLERANCE = 1e-6


def aliases(results: pd.DataFrame, metrics: Sequence[str] = METRICS) -> dict[str, str]:
    """Methods whose every metric (of ``metrics``) equals an earlier method's on every image they share (the
    alias's images all among the earlier method's), up to ``ALIAS_TOLERANCE``
    (float noise of batched forwards): {alias: original}, e.g. hybrid@val when the validation split
    chose a = 0.7. Comparing them would test nothing. The confirmatory methods (hybrid@0.7, Grad-CAM,
    LayerCAM) count as earliest: they are never aliases."""
    wide = {m: g.set_index("image")[list(metrics)].sort_index() for m, g in results.groupby("method", sort=False)}
    out: dict[str, str] = {}
    names = sorted(wide, key=lambda m: m not in (HYBRID, GC, LC))

    def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:   # a equals b on every image of a (b may have more)
        return bool(a.index.isin(b.index).all()) and bool(np.allclose(
            a.to_numpy(dtype=np.float64), b.loc[a.index].to_numpy(dtype=np.float64), rtol=0, atol=ALIAS_TOLERANCE,
            equal_nan=True))
    for i, m in enumerate(names):
        for earlier in names[:i]:
            if earlier not in out and same(wide[m], wide[earlier]):
                out[m] = earlier
                break
    return out


def comparison_pairs(labels: Sequence[str], results: pd.DataFrame | None = None) -> list[tuple[str, str]]:
    """Each hybrid (0.7 and the val-chosen alpha) against every other method, plus Grad-CAM vs LayerCAM;
    methods identical to an earlier one in ``results`` (:func:`aliases`) are left out."""
    dropped = set(aliases(results)) if results is not None else set()
    labels = [m for m in labels if m not in dropped]
    pairs: list[tuple[str, str]] = []
    for h in (HYBRID, HYBRID_VAL):
        if h in labels:
            pairs += [(h, m) for m in labels if m != h and (m, h) not in pairs]
    if GC in labels and LC in labels:
        pairs.append((GC, LC))
    return pairs


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
        write_atomic(out / f"{name}.csv", tables[name].to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))
    return tables


# ---------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Claim:
    """One thesis claim checked on our data: what it says, our numbers, whether it holds."""

    claim: str
    numbers: str
    holds: bool


def _mean(results: pd.DataFrame, method: str, metric: str) -> float:
    return float(results.loc[results.method == method, metric].mean())


def _test(tests: pd.DataFrame, a: str, b: str, metric: str, test: str = "paired t-test",
          subset: str = "all") -> pd.Series:
    sub = tests[tests.subset == subset] if "subset" in tests else tests
    row = sub[(sub.a == a) & (sub.b == b) & (sub.metric == metric) & (sub.test == test)]
    if row.empty:
        raise ValueError(f"no {test} of {a} vs {b} on {metric} ({subset} images) in the tests table")
    return row.iloc[0]


def _fmt_test(t: pd.Series, w: pd.Series) -> str:
    return (f"mean difference {t.mean_diff:+.4f} (95% BCa bootstrap CI {t.ci_low:+.4f} to {t.ci_high:+.4f}), "
            f"paired t = {t.statistic:.2f}, p = {t.p:.3g} (Holm-adjusted in the {t.family} family "
            f"{t.p_holm:.3g}), Wilcoxon p = {w.p:.3g}, d_z = {t.cohens_dz:.2f}, n = {t.n}; smallest mean "
            f"difference detectable with 80% power at this n: {t.detectable_diff_80:.4f}")


def comparable_means(results: pd.DataFrame, metric: str, method: str) -> pd.Series:
    """Mean ``metric`` over ``method``'s images, of ``method`` and every method evaluated on all of them.

    Methods run on fewer images are left out and the others are averaged on ``method``'s images
    only, so a comparison or ranking never sets means over different images side by side.
    """
    own = frozenset(results.loc[results["method"] == method, "image"])
    images = results.groupby("method", sort=False)["image"].apply(frozenset)
    peers = [m for m in images.index if own <= images[m]]
    shared = results[results["image"].isin(own) & results["method"].isin(peers)]
    return shared.groupby("method", sort=False)[metric].mean()


def thesis_claims(results: pd.DataFrame, tests: pd.DataFrame, timings: pd.DataFrame,
                  hybrid: str = HYBRID) -> list[Claim]:
    """The thesis' four claims, each checked for both insertion/deletion presets (rise and thesis)."""
    claims = []
    for preset, (ins, dele) in PRESET_COLUMNS.items():
        means = comparable_means(results, ins, hybrid)
        best = means.idxmax()
        n = results.loc[results["method"] == hybrid, "image"].nunique()
        claims.append(Claim(
            f"[{preset} protocol] {hybrid} has a higher mean insertion AUC than Grad-CAM and LayerCAM",
            f"on {hybrid}'s {n} images: {hybrid} {means[hybrid]:.4f}; Grad-CAM {means[GC]:.4f}; LayerCAM "
            f"{means[LC]:.4f} (best of the {len(means)} methods evaluated on all of them: {best} {means[best]:.4f}; "
            f"{hybrid} ranks {int((means > means[hybrid]).sum()) + 1})",
            bool(means[hybrid] > means[GC] and means[hybrid] > means[LC])))
        for other in (GC, LC):
            t, w = _test(tests, hybrid, other, ins), _test(tests, hybrid, other, ins, "wilcoxon")
            claims.append(Claim(f"[{preset} protocol] {hybrid} beats {other} on insertion AUC, Holm-adjusted "
                                f"p < {ALPHA_LEVEL} (paired t-test, {t.family})", _fmt_test(t, w),
                                bool(t.mean_diff > 0 and t.p_holm < ALPHA_LEVEL)))
        rows = [(_test(tests, hybrid, o, dele), _test(tests, hybrid, o, dele, "wilcoxon")) for o in (GC, LC)]
        claims.append(Claim(f"[{preset} protocol] deletion AUC differences of {hybrid} vs Grad-CAM and vs LayerCAM "
                            f"are not significant (p >= {ALPHA_LEVEL})",
                            "; ".join(f"vs {o}: {_fmt_test(t, w)}" for o, (t, w) in zip((GC, LC), rows)),
                            bool(all(t.p >= ALPHA_LEVEL for t, _ in rows))))
    med = timings.groupby("method")["ms_per_image"].median()
    if hybrid in med and GC in med:
        ratio = med[hybrid] / med[GC]
        claims.append(Claim(f"{hybrid} costs no extra time over Grad-CAM (median ratio <= {TIME_TOLERANCE})",
                            f"median ms per image: {hybrid} {med[hybrid]:.1f}, Grad-CAM {med[GC]:.1f}, "
                            f"LayerCAM {med.get(LC, np.nan):.1f}; ratio {ratio:.2f} (n = "
                            f"{timings.image.nunique()} images, batch 1)", bool(ratio <= TIME_TOLERANCE)))
    return claims


def floor_beaten(results: pd.DataFrame, metric: str, method: str) -> dict[str, bool]:
    """Whether ``method``'s mean beats each sanity floor's on ``metric`` (direction-aware), both means
    taken on the floor's images (:func:`comparable_means`). A floor is left out where either mean is
    undefined (e.g. localisation on images without boxes) or ``method`` did not run on all its images."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    out = {}
    for f in FLOORS:
        if f not in set(results.method):
            continue
        means = comparable_means(results, metric, f)
        if method in means and not np.isnan(means[method]) and not np.isnan(means[f]):
            out[f] = bool(sign * means[method] > sign * means[f])
    return out


def caveats(results: pd.DataFrame, claims: Sequence[Claim], n_sources: int) -> list[str]:
    """What a reader should NOT conclude, derived from the numbers."""
    n = results.image.nunique()
    shared = ("; images that share a source photo are not independent, so p-values are optimistic"
              if n_sources < n else "")
    out = [f"That a method is better in general: n = {n} images from {n_sources} distinct source photos, one "
           f"model{shared}.",
           "That 'not significant' means 'equal': a test that fails to reject says the data cannot tell the methods "
           "apart at this n, not that they are the same (see the CIs)."]
    by_preset = {}
    for c in claims:
        if c.claim.startswith("["):
            by_preset.setdefault(c.claim.split("]")[1], []).append(c.holds)
    if any(len(set(v)) > 1 for v in by_preset.values()):
        out.append("That a verdict is robust to the protocol: at least one claim holds under one insertion/deletion "
                   "protocol and fails under the other (substrate and number of steps matter).")
    for metric in ("insertion_auc", "deletion_auc", "insertion_auc_thesis", "deletion_auc_thesis", "adcc", "coherency"):
        lost = [f for f, ok in floor_beaten(results, metric, GC).items() if not ok]
        if lost:
            out.append(f"That {metric} measures explanation quality here on its own: the {' and '.join(lost)} "
                       f"floor(s) score as well as or better than Grad-CAM on it.")
    spread = results.groupby("method", sort=False)["insertion_auc"].mean()
    gap = spread.drop([f for f in FLOORS if f in spread.index]).agg(["min", "max"])
    out.append(f"That small differences matter: the CAM methods' mean insertion AUCs span only "
               f"{gap['min']:.4f}-{gap['max']:.4f}.")
    return out


def distinct_sources(results: pd.DataFrame) -> int:
    """Number of distinct source photos (a composite's ``source`` lists its sources joined by '+')."""
    return len({s for src in results.drop_duplicates("image").source for s in str(src).split("+")})


def _claim_lines(claims: Sequence[Claim]) -> list[str]:
    return [line for c in claims for line in (f"- **{'HOLDS' if c.holds else 'DOES NOT HOLD'}** - {c.claim}.  ",
                                              f"  {c.numbers}")]


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
            t = _test(tests, HYBRID, other, ins, subset="correct")
            w = _test(tests, HYBRID, other, ins, "wilcoxon", subset="correct")
            lines.append(f"- [{preset} protocol] {HYBRID} vs {other}, insertion AUC: {_fmt_test(t, w)}")
    return lines


def markdown_table(df: pd.DataFrame, digits: int = 4) -> list[str]:
    """A table as Markdown lines, floats rounded to ``digits`` (no extra dependency)."""
    def cell(v: object) -> str:
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)
    return ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)] + \
        ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]


def interval_table(summary: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """``mean [lo, hi]`` strings per metric from a summary with ``<metric>_mean/_lo/_hi`` columns."""
    out = summary[list(keys) + (["n"] if "n" in summary else [])].copy()
    for m in metrics:
        out[m] = [f"{a:.4f} [{lo:.4f}, {hi:.4f}]" for a, lo, hi in
                  zip(summary[f"{m}_mean"], summary[f"{m}_lo"], summary[f"{m}_hi"])]
    return out


def localisation_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The localisation rows of a summary table: per metric x method, n, the mean with its BCa CI
    resampling source photos, and the mean of per-class means."""
    loc = summary[summary["metric"].isin(LOCALISATION)].sort_values("metric", kind="stable")
    return pd.DataFrame({"metric": loc["metric"].to_numpy(), "method": loc["method"].to_numpy(), "n": loc["n"].to_numpy(),
                         "mean [95% CI, source photos]": [f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in
                                                          zip(loc["mean"], loc["ci_low_cluster"], loc["ci_high_cluster"])],
                         "mean of class means": loc["class_mean"].round(4).to_numpy()})


def render_report(ev: Evaluation, tables: dict[str, pd.DataFrame], alpha: float, facts: dict[str, str],
                  sections: Mapping[str, Sequence[str]] | None = None) -> str:
    """REPORT.md text: setup, the protocol that ran, each claim with our numbers and verdict, the
    correctly classified subset, further ``sections`` (title -> Markdown lines, e.g. other layers or
    a separate experiment), floors, caveats, files."""
    results, tests = tables["evaluation_results"], tables["statistical_tests"]
    n_sources = distinct_sources(results)
    claims = thesis_claims(results, tests, tables["evaluation_timings"])
    val_alias = aliases(results).get(HYBRID_VAL) is not None
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
              "## The thesis' claims on our data", ""] + _claim_lines(claims)
    lines += ["", "## The main comparison on the correctly classified images", ""] + correct_lines(tests, results)
    lines += ["", f"## The same claims for the hybrid at the validation-chosen a = {alpha:g}", ""]
    if val_alias:
        lines += [f"(hybrid@val gives the same numbers as {aliases(results)[HYBRID_VAL]} on every image and metric: "
                  "its comparisons are not repeated.)"]
    else:
        lines += _claim_lines(thesis_claims(results, tests, tables["evaluation_timings"], hybrid=HYBRID_VAL))
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


# ---------------------------------------------------------------- figure

def plot_comparison(ev: Evaluation, metrics: Sequence[str] = METRICS, path: str | Path | None = None) -> plt.Figure:
    """Box + strip plot per metric, mean insertion/deletion curves with 95% bands, time per method."""
    labels = [s.label for s in ev.methods]
    panels = len(metrics) + 3
    cols = 4
    fig, axes = plt.subplots(-(-panels // cols), cols, figsize=(4.2 * cols, 3.2 * -(-panels // cols)), squeeze=False)
    axes = axes.ravel()
    rng = np.random.default_rng(SEED)
    for ax, metric in zip(axes, metrics):
        data = [ev.results.loc[ev.results.method == m, metric].dropna().to_numpy() for m in labels]
        ax.boxplot(data, showfliers=False)
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=5, alpha=0.5, color="k")
        ax.set_title(metric + (" (lower better)" if metric in LOWER_IS_BETTER else ""), fontsize=9)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=7)
    for ax, mode in zip(axes[len(metrics):], ("insertion", "deletion")):
        for m in labels:
            c = ev.curves[m][mode]
            if len(c) == 0:
                continue
            x = np.linspace(0, 1, c.shape[1])
            mean, half = c.mean(0), 1.96 * c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else 0 * c.mean(0)
            ax.plot(x, mean, label=f"{m} (n={len(c)})", lw=1)
            ax.fill_between(x, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1), alpha=0.15)
        ax.set_title(f"mean {mode} curve (rise protocol), 95% band", fontsize=9)
        ax.set_xlabel("fraction of pixels")
        ax.set_ylabel("p(class)")
    axes[len(metrics)].legend(fontsize=6)
    ax = axes[len(metrics) + 2]
    med = ev.timings.groupby("method")["ms_per_image"].median().reindex(labels)
    ax.barh(range(len(labels))[::-1], med.to_numpy())
    ax.set_yticks(range(len(labels))[::-1], labels, fontsize=7)
    ax.set_title("median time per image (ms, batch 1)", fontsize=9)
    for extra in axes[panels:]:
        extra.axis("off")
    fig.tight_layout()
    if path is not None:
        with atomic_file(path) as fh:
            fig.savefig(fh, dpi=90, format=Path(path).suffix.lstrip(".") or "png")
    return fig


def write_all(ev: Evaluation, out_dir: str | Path, alpha: float, facts: dict[str, str],
              sections: Mapping[str, Sequence[str]] | None = None) -> dict[str, pd.DataFrame]:
    """Every output: the four CSVs, comparison_plots.png and REPORT.md in ``out_dir``."""
    tables = write_tables(ev, out_dir)
    plt.close(plot_comparison(ev, path=Path(out_dir) / "comparison_plots.png"))
    write_atomic(Path(out_dir) / "REPORT.md", render_report(ev, tables, alpha, facts, sections))
    return tables
