"""Verdicts on the thesis' claims, computed from the tests table: the answer lines, the claims, the caveats.

Every sentence here is generated from the numbers (never written by hand), so the text changes when
the data does. :func:`answer_lines` gives the one-line-per-claim answer that opens notebook 5,
REPORT.md and the README; :func:`thesis_claims` and :func:`caveats` give the report's detail.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation.policy import ALPHA_LEVEL, GC, HYBRID, LC, PRESET_COLUMNS
from ..evaluation.stats import CONFIRMATORY

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


def answer_lines(tests: pd.DataFrame, deletion_line: str, timing_note: str | None = None,
                 hybrid: str = HYBRID) -> list[str]:
    """One verdict line per thesis claim (Markdown), from the confirmatory rows (insertion) of ``tests``;
    ``deletion_line`` answers the deletion claim (its equivalence test:
    :func:`helpers.report.robustness.equivalence_line`), ``timing_note`` says where the time claim is judged."""
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
    lines.append(deletion_line)
    if timing_note:
        lines.append(f"- **Claim: the hybrid costs no extra time over Grad-CAM** - {timing_note}")
    return lines


def replication_line(tests: pd.DataFrame, hybrid: str = HYBRID) -> str:
    """Does the first model's answer recur on the others? One Markdown line (exploratory) from per-model
    rows (column ``model``; methods named ``"<method> (<model>)"``, as
    :func:`helpers.report.present.architecture_tests` gives them): the hybrid minus Grad-CAM on each further
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
