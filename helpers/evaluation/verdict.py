"""Verdicts on the thesis' claims, computed from the tests table: the answer lines, the claims, the caveats.

Every sentence here is generated from the numbers (never written by hand), so the text changes when
the data does. :func:`answer_lines` gives the one-line-per-claim answer that opens notebook 5,
REPORT.md and the README; :func:`thesis_claims` and :func:`caveats` give the report's detail.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .policy import ALPHA_LEVEL, GC, HYBRID, LC, PRESET_COLUMNS
from .runner import FLOORS, LOWER_IS_BETTER
from .stats import CONFIRMATORY

#: "No time overhead": the hybrid's median time per image at most this multiple of Grad-CAM's.
TIME_TOLERANCE = 1.10
#: p-values below this print as "< 1e-10" (a t-distribution tail this far out is not worth more digits).
P_FLOOR = 1e-10
NAMES = {GC: "Grad-CAM", LC: "LayerCAM"}


def format_p(p: float) -> str:
    """A p-value for reading: ``< 1e-10``, ``2.0e-08`` below 0.001, else three decimals (``0.043``)."""
    if p is None or np.isnan(p):
        return "n/a"
    if p < P_FLOOR:
        return f"< {P_FLOOR:.0e}"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def p_text(p: float, name: str = "p") -> str:
    """``p = 0.043``, ``p = 2.0e-08`` or ``p < 1e-10`` (:func:`format_p` with its sign)."""
    text = format_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


@dataclass(frozen=True)
class Claim:
    """One thesis claim checked on our data: what it says, our numbers, whether it holds."""

    claim: str
    numbers: str
    holds: bool


def find_test(tests: pd.DataFrame, a: str, b: str, metric: str, test: str = "paired t-test",
              subset: str = "all") -> pd.Series:
    """The tests table's row of ``a`` vs ``b`` on ``metric`` (clear error when absent)."""
    sub = tests[tests.subset == subset] if "subset" in tests else tests
    row = sub[(sub.a == a) & (sub.b == b) & (sub.metric == metric) & (sub.test == test)]
    if row.empty:
        raise ValueError(f"no {test} of {a} vs {b} on {metric} ({subset} images) in the tests table")
    return row.iloc[0]


def difference_text(t: pd.Series) -> str:
    """``+0.0012 [95% CI -0.0003, +0.0027], n = 600, Holm p = 0.120`` of one tests-table row."""
    return (f"{t.mean_diff:+.4f} [95% CI {t.ci_low:+.4f}, {t.ci_high:+.4f}], n = {t.n}, "
            + p_text(t.p_holm, "Holm p" if t.family == CONFIRMATORY else "exploratory Holm p"))


def direction(t: pd.Series, lower_is_better: bool = False) -> str:
    """``better`` / ``worse`` (significant after Holm, direction-aware) or ``no difference shown``."""
    if not t.p_holm < ALPHA_LEVEL:
        return "no difference shown"
    return "better" if (t.mean_diff > 0) != lower_is_better else "worse"


def answer_lines(tests: pd.DataFrame, timing_note: str | None = None, hybrid: str = HYBRID) -> list[str]:
    """One verdict line per thesis claim (Markdown), from the confirmatory rows (insertion) and the
    exploratory deletion rows of ``tests``; ``timing_note`` says where the time claim is judged."""
    lines = []
    for other in (GC, LC):
        parts = {p: find_test(tests, hybrid, other, cols[0]) for p, cols in PRESET_COLUMNS.items()}
        verdicts = {p: direction(t) for p, t in parts.items()}
        word = {"better": "SUPPORTED", "worse": "CONTRADICTED (the hybrid is worse)",
                "no difference shown": "NOT SHOWN (no significant difference)"}[verdicts["rise"]]
        agree = ("" if len(set(verdicts.values())) == 1 else
                 f" The thesis protocol disagrees: {verdicts['thesis']}.")
        lines.append(f"- **Claim: {hybrid} has a higher insertion AUC than {NAMES[other]} - {word}.** "
                     f"Paired difference (hybrid - {NAMES[other]}): rise protocol {difference_text(parts['rise'])}; "
                     f"thesis protocol {difference_text(parts['thesis'])}. Smallest difference detectable with 80% "
                     f"power: {parts['rise'].detectable_diff_80:.4f}.{agree}")
    rows = {o: find_test(tests, hybrid, o, PRESET_COLUMNS["rise"][1]) for o in (GC, LC)}
    significant = [o for o, t in rows.items() if t.p < ALPHA_LEVEL]
    word = "HOLDS" if not significant else "DOES NOT HOLD (the hybrid's deletion AUC is " + " and ".join(
        f"{'higher' if rows[o].mean_diff > 0 else 'lower'} than {NAMES[o]}'s" for o in significant) + ")"
    lines.append(f"- **Claim: the deletion AUC differences are not significant - {word}** (exploratory, unadjusted "
                 f"p >= {ALPHA_LEVEL}). " + "; ".join(
                     f"vs {NAMES[o]}: {t.mean_diff:+.4f} [95% CI {t.ci_low:+.4f}, {t.ci_high:+.4f}], "
                     f"{p_text(t.p)}" for o, t in rows.items()) + "; lower is better.")
    if timing_note:
        lines.append(f"- **Claim: the hybrid costs no extra time over Grad-CAM** - {timing_note}")
    return lines


def replication_line(tests: pd.DataFrame, hybrid: str = HYBRID) -> str:
    """Does the first model's answer recur on the others? One Markdown line (exploratory) from per-model
    rows (column ``model``; methods named ``"<method> (<model>)"``, as
    :func:`helpers.study.present.architecture_tests` gives them): the hybrid minus Grad-CAM on each further
    model, and on which models its direction matches the first model's."""
    rows = tests[tests["a"].str.startswith(f"{hybrid} (") & tests["b"].str.startswith(f"{NAMES[GC]} (")]
    if len(rows) < 2:
        raise ValueError(f"need {hybrid} vs Grad-CAM on at least two models, got {list(rows['model'])}")
    first, others = rows.iloc[0], [t for _, t in rows.iloc[1:].iterrows()]
    ref = direction(first)
    words = {"better": "better than Grad-CAM", "worse": "worse than Grad-CAM",
             "no difference shown": "not shown to differ from Grad-CAM"}
    same = [t.model for t in others if direction(t) == ref]
    differ = [f"{t.model} ({words[direction(t)]})" for t in others if direction(t) != ref]
    verdict = ("the same on every other model" if not differ else
               f"the same on {', '.join(same) or 'no other model'}; not on {', '.join(differ)}")
    return (f"- **Other models (exploratory):** {hybrid} minus Grad-CAM, insertion AUC: "
            + "; ".join(f"{t.model} {difference_text(t)}" for t in others)
            + f". On {first.model} the hybrid is {words[ref]}: {verdict}.")


def fmt_test(t: pd.Series, w: pd.Series) -> str:
    """A paired t-test row and its Wilcoxon row as one sentence of numbers."""
    return (f"mean difference {t.mean_diff:+.4f} (95% BCa bootstrap CI {t.ci_low:+.4f} to {t.ci_high:+.4f}), "
            f"paired t = {t.statistic:.2f}, p = {format_p(t.p)} (Holm-adjusted in the {t.family} family "
            f"{format_p(t.p_holm)}), Wilcoxon p = {format_p(w.p)}, d_z = {t.cohens_dz:.2f}, n = {t.n}; smallest mean "
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
            t, w = find_test(tests, hybrid, other, ins), find_test(tests, hybrid, other, ins, "wilcoxon")
            claims.append(Claim(f"[{preset} protocol] {hybrid} beats {other} on insertion AUC, Holm-adjusted "
                                f"p < {ALPHA_LEVEL} (paired t-test, {t.family})", fmt_test(t, w),
                                bool(t.mean_diff > 0 and t.p_holm < ALPHA_LEVEL)))
        rows = [(find_test(tests, hybrid, o, dele), find_test(tests, hybrid, o, dele, "wilcoxon")) for o in (GC, LC)]
        claims.append(Claim(f"[{preset} protocol] deletion AUC differences of {hybrid} vs Grad-CAM and vs LayerCAM "
                            f"are not significant (p >= {ALPHA_LEVEL})",
                            "; ".join(f"vs {o}: {fmt_test(t, w)}" for o, (t, w) in zip((GC, LC), rows, strict=True)),
                            bool(all(t.p >= ALPHA_LEVEL for t, _ in rows))))
    med = timings.groupby("method")["ms_per_image"].median()
    if hybrid in med and GC in med:
        ratio = med[hybrid] / med[GC]
        claims.append(Claim(f"{hybrid} costs no extra time over Grad-CAM (median ratio <= {TIME_TOLERANCE})",
                            f"median ms per image: {hybrid} {med[hybrid]:.1f}, Grad-CAM {med[GC]:.1f}, "
                            f"LayerCAM {med.get(LC, np.nan):.1f}; ratio {ratio:.2f} (n = "
                            f"{timings.image.nunique()} images, batch 1)", bool(ratio <= TIME_TOLERANCE)))
    return claims


def claim_lines(claims: Sequence[Claim]) -> list[str]:
    """Markdown lines: each claim's verdict in bold, then its numbers."""
    return [line for c in claims for line in (f"- **{'HOLDS' if c.holds else 'DOES NOT HOLD'}** - {c.claim}.  ",
                                              f"  {c.numbers}")]


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
    by_preset: dict[str, list[bool]] = {}
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
