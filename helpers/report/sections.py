"""The report's further sections, each generated from one part's rows, or "not computed yet" with its command.

Sanity check (``sanity``), below the head (``layers``), across architectures (``lite1``, ``lite2``),
ROAD (``road``, ``road_extra``), adaptive a (``alpha_head``, ``features_val``, ``oracle``,
``features_test``), the worked metric example, and the consistency notes (composites' counts, the
thesis' sample, why the AUC levels differ). Each returns Markdown lines; a missing part gives the
sentence of :meth:`helpers.study.results.Study.missing` instead.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..config import SEED, write_atomic
from ..evaluation.policy import GC, HYBRID, LC, ROUNDING_BOUND, ROUNDING_SHARE, THESIS_ALPHA, aliases, parent_at
from ..evaluation.runner import LOWER_IS_BETTER
from ..evaluation.stats import bootstrap_ci
from ..study import adaptive
from ..study.results import Study
from .figures import forest_plot, mean_curves, save
from .leaderboard import leaderboard, leaderboard_view, markdown_table
from .plots import plot_best_alpha, plot_randomisation
from .present import MODEL_PARTS, architecture_tests, identical, model_parts, worked_example
from .verdict import NAMES, format_p

#: A map passes the cascading-randomisation check when its mean Spearman correlation with the trained
#: model's map falls below this once the classifier is randomised (Adebayo et al. read "stays high" as failing).
SANITY_THRESHOLD = 0.5
#: The sanity part of the hybrid the thesis proposes, at its fixed a (``sanity``'s hybrid runs at the chosen a).
SANITY_FIXED = "sanity_h07"
#: The cascade's figure, written beside REPORT.md.
SANITY_FIGURE = "sanity.png"
ROAD_METRICS: tuple[str, ...] = ("road_combined", "road_morf", "road_lerf")
#: The parts the adaptive-a answer reads.
ADAPTIVE_PARTS: tuple[str, ...] = ("alpha_head", "features_val", "oracle", "features_test")
#: The thesis' setting (for the consistency paragraph): its sample, model and insertion AUCs.
THESIS_N, THESIS_MODEL, THESIS_INSERTION = 10, "ResNet-50", 0.11


def in_folder(lines: Sequence[str], folder: str = "results") -> str:
    """A section's Markdown as read from the project root (the notebooks): its relative links (figures, CSVs,
    written beside REPORT.md) point into ``folder``."""
    return re.sub(r"\]\((?!https?:|/|#)([^)]+)\)", rf"]({folder}/\1)", "\n".join(lines))


def missing_lines(study: Study, *names: str) -> list[str] | None:
    """The "not computed yet" lines of the ``names`` not in the study, or None when all are there."""
    absent = [n for n in names if not study.has(n)]
    return [f"- {study.missing(n)}" for n in absent] or None


def sanity_rows(study: Study) -> tuple[pd.DataFrame, str | None]:
    """The cascade's rows of ``sanity`` with those of :data:`SANITY_FIXED` where computed, and the parent the
    ``sanity`` part's hybrid IS at its chosen a (:func:`parent_at`; its rows are then left out: it is that
    parent, with no verdict of its own), else None."""
    rows = study.rows("sanity")
    parent = parent_at(study.parts["sanity"].facts.get("alpha"))
    if parent is not None:
        rows = rows[rows["method"] != "hybrid"]
    if study.has(SANITY_FIXED):
        rows = pd.concat([rows, study.rows(SANITY_FIXED)], ignore_index=True)
    return rows, parent


def hybrid_sanity_lines(study: Study, first: pd.DataFrame, threshold: float) -> list[str]:
    """What the LayerCAM factor's result does to hybrid@0.7 (``first``: the rows once the classifier is
    randomised), from its paired difference to Grad-CAM on the same photos; "not computed yet" without it."""
    if not study.has(SANITY_FIXED):
        return ["", f"- {study.missing(SANITY_FIXED)}"]
    wide = first.pivot(index="image", columns="method", values="spearman")
    if not {HYBRID, GC, LC} <= set(wide):
        return []
    d = (wide[HYBRID] - wide[GC]).dropna().to_numpy(np.float64)
    lo, hi = bootstrap_ci(d, seed=SEED)
    h, lc = wide[HYBRID].mean(), wide[LC].mean()
    word = "still passes" if h < threshold else "fails too"
    than = ("above" if lo > 0 else "below" if hi < 0 else "not distinguishable from")
    return ["", f"What LayerCAM's result does to the hybrid the thesis proposes: {HYBRID} = norm(Grad-CAM)^"
            f"{THESIS_ALPHA:g} x norm(LayerCAM)^{1 - THESIS_ALPHA:.1g} has LayerCAM as a factor, whose map stays at "
            f"{lc:.3f} once the classifier is random. The product {word}: {h:.3f}, {d.mean():+.3f} [95% CI {lo:+.3f}, "
            f"{hi:+.3f}] against Grad-CAM on the same {len(d)} photos ({than} Grad-CAM's). An explanation, not "
            "tested here: the Grad-CAM factor, which the random classifier scrambles, sets the product's ranking, "
            "and the LayerCAM factor keeps only a little of the activation pattern."]


def sanity_lines(study: Study, threshold: float = SANITY_THRESHOLD) -> list[str]:
    """Which methods pass the cascading randomisation (mean Spearman after the classifier is randomised below
    ``threshold``), with n and CIs, what LayerCAM's result does to hybrid@0.7, and what a map that stays
    similar means; a hybrid whose maps are a parent's is named as that parent, with no verdict of its own."""
    if (skip := missing_lines(study, "sanity")) is not None:
        return skip
    rows, parent = sanity_rows(study)
    first = rows[rows["step"] == 1]
    last = rows[rows["step"] == rows["step"].max()]
    n = rows["image"].nunique()
    lines = [f"Spearman rank correlation between each map and the trained model's map, n = {n} photos; a method "
             f"passes when the mean falls below {threshold:g} once the classifier is randomised. Intervals are 95% "
             "BCa bootstrap CIs over the photos.", ""]
    stay = []
    for method, g in first.groupby("method", sort=False):
        v = g["spearman"].to_numpy(dtype=np.float64)
        lo, hi = bootstrap_ci(v, seed=SEED)
        end = last.loc[last["method"] == method, "spearman"].mean()
        passes = v.mean() < threshold
        stay += [] if passes else [method]
        lines.append(f"- **{method}: {'passes' if passes else 'FAILS'}** - classifier randomised: {v.mean():.3f} "
                     f"[95% CI {lo:.3f}, {hi:.3f}]; after the last step ({last['randomised'].iloc[0]}): {end:.3f}.")
    if parent is not None:
        alpha = float(study.parts["sanity"].facts["alpha"])
        lines += ["", f"The `sanity` part's hybrid runs at the a chosen on the val photos, a = {alpha:g}: its maps are "
                  f"{NAMES[parent]}'s, so it is {NAMES[parent]} and has no verdict of its own."]
    lines += hybrid_sanity_lines(study, first, threshold) + ["", f"![The cascade per method]({SANITY_FIGURE})"]
    if stay:
        lines += ["", f"{', '.join(stay)} stay(s) close to the trained map when the classifier's weights are random: "
                  "such a map follows the features' activations (what the image contains), not the class decision. "
                  "An explanation, not tested here: LayerCAM weights each activation by its positive gradient; once "
                  "the classifier is random those gradients are still positive where the activations are strong, so "
                  "the map keeps the activation pattern. Its agreement with a class's evidence is therefore not "
                  "evidence that it explains the classifier."]
    return lines


def leaderboard_lines(rows: pd.DataFrame, metric: str, by: str) -> list[str]:
    """One leaderboard per value of ``by`` (a layer setting or a model), each on its own shared photos."""
    lines = []
    for key, g in rows.groupby(by, sort=False):
        ref = GC if GC in set(g["method"]) else g["method"].iloc[0]
        hybrids = g[g["method"].str.startswith("hybrid") & g["alpha"].notna()] if "alpha" in g else g.iloc[:0]
        alphas = hybrids.groupby("method", sort=False)["alpha"].first()
        notes = [f"{m}: a = {a:g}" + (f" (its maps are {NAMES[parent_at(a)]}'s)" if parent_at(a) else "")
                 for m, a in alphas.items() if m != f"hybrid@{THESIS_ALPHA}"]
        lines += ["", f"**{by} {key}**" + (f" ({'; '.join(notes)})" if notes else ""), ""]
        same = aliases(g, [metric], share=ROUNDING_SHARE, bound=ROUNDING_BOUND)   # the same maps up to rounding
        lines += markdown_table(leaderboard_view(leaderboard(g, metric, ref, same=same), ref))
    return lines


def layers_vs_head_lines(study: Study, metric: str = "insertion_auc") -> list[str]:
    """Every layer setting's methods in one leaderboard against the head's Grad-CAM (the ``main`` part's rows),
    paired on the photos all share; nothing when either part is missing."""
    if not (study.has("layers") and study.has("main")):
        return []
    layers, main = study.rows("layers"), study.rows("main")
    reference = f"{GC} @ head"
    rows = pd.concat([main[main["method"] == GC].assign(method=reference),      # first: never folded into another
                      layers.assign(method=layers["method"] + " @ " + layers["layer"])], ignore_index=True)
    rows = rows[["image", "method", metric]]
    table = leaderboard(rows, metric, reference, same=aliases(rows, share=ROUNDING_SHARE, bound=ROUNDING_BOUND))
    return (["", f"**Every setting against the head's Grad-CAM** (the `main` part's rows; paired on the "
             f"{int(table['n'].iloc[0])} photos all share, Holm over this table)", ""]
            + markdown_table(leaderboard_view(table, reference)))


def secondary_lines(study: Study) -> dict[str, list[str]]:
    """The layer study and the other architectures: insertion AUC leaderboards (exploratory)."""
    out = {}
    if not study.defines("layers", *MODEL_PARTS):
        return out
    out["Below the head (layer study, exploratory)"] = missing_lines(study, "layers") or (
        [f"Insertion AUC (rise) per layer setting, {study.coverage('layers')}; the hybrid's a per setting was chosen "
         "on the val photos (`alpha_layers`); a hybrid whose a is 0 or 1 is LayerCAM or Grad-CAM."]
        + leaderboard_lines(study.rows("layers"), "insertion_auc", "layer") + layers_vs_head_lines(study))
    models = model_parts(study)
    out["Across architectures (exploratory)"] = (missing_lines(study, *MODEL_PARTS) or []) + (
        [f"Insertion AUC (rise) per model on the same test photos ({coverage_text(study, models)})."]
        + leaderboard_lines(pd.concat([study.rows(m) for m in models]), "insertion_auc", "model")
        + ["", f"![{ARCHITECTURES_TITLE}]({ARCHITECTURES_FIGURE})"] if models else [])
    return out


#: The figure of :func:`~helpers.report.present.architecture_tests` (written next to REPORT.md) and its title.
ARCHITECTURES_FIGURE = "architectures.png"
ARCHITECTURES_TITLE = "hybrid@0.7 and LayerCAM minus Grad-CAM on each model (exploratory, Holm within each model)"


def architectures_figure(study: Study, path: str | Path | None = None, seed: int = SEED) -> plt.Figure:
    """The forest plot of :func:`architecture_tests`: one row per model and comparison, n and Holm p."""
    tests = architecture_tests(study, seed=seed)
    if tests.empty:
        raise ValueError("the study has none of the parts main, lite1, lite2")
    return forest_plot(tests, path, title=ARCHITECTURES_TITLE)


def coverage_text(study: Study, names: Sequence[str]) -> str:
    """The photos of several parts: ``600 photos each`` where they agree, else ``lite1: 600 photos; lite2: ...``."""
    covers = [study.coverage(name) for name in names]
    if len(set(covers)) == 1:
        return covers[0] + (" each" if len(covers) > 1 else "")
    return "; ".join(f"{name}: {cover}" for name, cover in zip(names, covers, strict=True))


def road_lines(study: Study) -> list[str]:
    """Does the verdict hold under ROAD? Paired differences vs Grad-CAM on road_combined/morf/lerf (exploratory):
    the thesis methods and floors on every photo of ``road``, then every method on the photos ``road_extra``
    covers (so a partial ``road_extra`` does not shrink the thesis comparisons)."""
    if (skip := missing_lines(study, "road")) is not None:
        return skip
    alpha = float(study.parts["road"].facts["alpha"])
    core = study.rows("road")
    core = core[~core["method"].isin(identical(core, alpha))]
    lines = ["Exploratory: the confirmatory family was fixed before the data and stays insertion AUC. ROAD "
             "(Rong et al. 2022) fills removed pixels by noisy linear imputation, so the removed region's shape "
             f"does not leak the class. {study.coverage('road')} for the thesis methods and the floors"
             + (f", {study.coverage('road_extra')} for the further methods" if study.has("road_extra") else "")
             + ". road_combined = (LeRF - MoRF) / 2 (higher is better); MoRF lower is better, LeRF higher is "
             "better.", "", "![MoRF and LeRF curves](road_curves.png)"]
    beaten = []
    for metric in ROAD_METRICS:
        table = leaderboard(core, metric, GC)
        lines += ["", f"**{metric}** (the thesis methods and floors)", ""] + markdown_table(leaderboard_view(table))
        t = table.set_index("method")
        if "random" in t.index and metric != "road_combined":
            floor = t.loc["random"]                                     # its CI wholly on the better side:
            if (floor["diff_high"] < 0) if metric in LOWER_IS_BETTER else (floor["diff_low"] > 0):
                beaten.append(metric)
        if metric == "road_combined":
            if HYBRID in t.index and "random" in t.index:
                floor = t.loc["random"]
                word = ("above" if floor["diff_high"] < 0 else "below" if floor["diff_low"] > 0
                        else "not distinguishable from")
                lines += ["", f"Under ROAD, Grad-CAM is {word} the random floor (random minus Grad-CAM "
                          f"{floor['diff']:+.4f} [95% CI {floor['diff_low']:+.4f}, {floor['diff_high']:+.4f}]); "
                          f"hybrid@0.7 minus Grad-CAM {t.loc[HYBRID, 'diff']:+.4f} [95% CI "
                          f"{t.loc[HYBRID, 'diff_low']:+.4f}, {t.loc[HYBRID, 'diff_high']:+.4f}]."]
    if beaten:
        lines += ["", f"The random floor beats Grad-CAM on {' and '.join(beaten)} alone: removing scattered pixels "
                  "leaves every removed pixel next to known ones, so the imputation restores the image nearly whole "
                  "and the class survives whichever order removes them. A random map therefore scores well as LeRF "
                  "and badly as MoRF; road_combined, their difference, cancels that, which is why it is the ROAD "
                  "score to read."]
    if study.has("road_extra"):
        every = pd.concat([core, study.rows("road_extra")], ignore_index=True)
        every = every[~every["method"].isin(identical(every, alpha))]
        table = leaderboard(every, "road_combined", GC)
        lines += ["", f"**road_combined, every method** (on the {int(table['n'].iloc[0])} photos all of them share)",
                  ""] + markdown_table(leaderboard_view(table))
    return lines


def road_curves(study: Study, path: str | Path | None = None) -> plt.Figure:
    """Mean MoRF and LeRF curves (probability of the explained class at each removed fraction p) of the thesis'
    methods and a floor per panel (at most 4 methods), from the ``road`` part's per-p columns."""
    rows = study.rows("road")
    out = {}
    for mode in ("road_morf", "road_lerf"):
        cols = sorted((c for c in rows if c.startswith(mode + "_") and c[len(mode) + 1:].isdigit()),
                      key=lambda c: int(c.rsplit("_", 1)[1]))
        out[f"{mode}_curve"] = list(rows[cols].to_numpy(dtype=np.float64))
    ps = [int(c.rsplit("_", 1)[1]) / 100 for c in sorted((c for c in rows if c.startswith("road_morf_")),
                                                         key=lambda c: int(c.rsplit("_", 1)[1]))]
    methods = set(rows["method"])
    groups = [[m for m in group if m in methods] for group in ((GC, LC, HYBRID, "random"), (GC, "gaussian"))]
    return mean_curves(rows.assign(**out), [g for g in groups if g], ("road_morf", "road_lerf"), path, x=ps)


def adaptive_answer(study: Study) -> adaptive.AdaptiveAnswer:
    """:func:`helpers.study.adaptive.answer` of the study's folder, computed once per :class:`Study`."""
    return study.cached("adaptive", lambda: adaptive.answer(study.folder))


def adaptive_lines(study: Study) -> list[str]:
    """The adaptive-a answer (:func:`helpers.study.adaptive.answer`): its verdict first, then the comparisons."""
    if (skip := missing_lines(study, *ADAPTIVE_PARTS)) is not None:
        return skip
    ans = adaptive_answer(study)
    table = ans.comparison[["pair", "n", "mean_diff", "ci_low", "ci_high", "p_holm", "detectable_diff_80"]]
    note = f"a chosen on the val photos: {ans.alpha_val:g}"
    parent = parent_at(ans.alpha_val)
    if parent is not None:                               # hybrid@val is a parent: its rows repeat that parent's
        repeats = table["pair"].str.endswith("(val)") & table["pair"].str.startswith(("oracle", "hybrid@adaptive"))
        table = table[~repeats] if (table["pair"].str.endswith(f"vs {parent}")).any() else table
        note += f" (the hybrid at that a is {parent}'s map, so its comparisons are the {parent} rows)"
    table = table.assign(p_holm=table["p_holm"].map(format_p))
    files = ("Per photo: [adaptive_a.csv](adaptive_a.csv); tests: [adaptive_a_tests.csv](adaptive_a_tests.csv); "
             "feature importance on val: [adaptive_a_importance.csv](adaptive_a_importance.csv).")
    return [f"**{ans.verdict}**", "", f"{note}. Exploratory.", ""] + markdown_table(table) + \
        ["", "![Best a per test photo](adaptive_best_a.png)", "", files]


def write_adaptive(study: Study, out: str | Path) -> dict[str, Path]:
    """The adaptive-a answer as files in ``out``: ``adaptive_a.csv`` (per test photo: the upper bound's best a,
    the predicted a, and the insertion AUC of every compared method), ``adaptive_a_tests.csv``,
    ``adaptive_a_importance.csv`` (permutation importance on val) and ``adaptive_best_a.png`` (histogram of
    the test photos' best a: an upper bound). Nothing when a part is missing."""
    if not all(map(study.has, ADAPTIVE_PARTS)):
        return {}
    ans, out = adaptive_answer(study), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_photo = (ans.test_rows.pivot(index="image", columns="method", values="insertion_auc")
                 .join(ans.upper_bound.set_index("image")).join(ans.predicted.rename("predicted_alpha")))
    paths = {name: out / f"{name}.csv" for name in ("adaptive_a", "adaptive_a_tests", "adaptive_a_importance")}
    for name, table in zip(paths, (per_photo.reset_index(), ans.comparison, ans.importance), strict=True):
        write_atomic(paths[name], table.to_csv(index=False, float_format="%.6g"))
    fig = plot_best_alpha(ans.upper_bound)
    fig.axes[0].set_title(f"Best a per test photo (an upper bound: the metric chose it), n = {len(per_photo)}")
    paths["adaptive_best_a"] = out / "adaptive_best_a.png"
    fig.savefig(paths["adaptive_best_a"], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def example_lines(study: Study) -> list[str]:
    """The worked example's rule, photo and the explanation of a random map beating Grad-CAM."""
    photo, diff, beaten = worked_example(study.rows("main"))
    n = study.rows("main")["image"].nunique()
    return [f"The photo is picked by a stated rule: the median Grad-CAM-minus-random insertion AUC difference over "
            f"the {n} test photos: **{photo}** ({diff:+.4f}). The random map beats Grad-CAM on {beaten} of the {n} "
            "photos. Under the blurred insertion substrate the blur keeps the object's coarse shape and colour, so "
            "the class probability is often high from the first step; revealing scattered pixels (random) restores "
            "fine texture everywhere at once, which can raise the probability as fast as revealing the object's "
            "region (Grad-CAM), especially for large objects or texture-defined classes. One photo says little: the "
            "means over all photos (leaderboard) are the comparison."]


def consistency_lines(localisation: pd.DataFrame | None) -> list[str]:
    """The composites' counts (from their rows), the thesis' sample, and why the AUC levels differ."""
    lines = []
    if localisation is not None:
        one = localisation[localisation["method"] == localisation["method"].iloc[0]]
        kinds = one["kind"].value_counts()
        objects = one["source"].astype(str).str.split("+").str[0].nunique()
        scored = one["pointing_game"].notna()
        unscored = ", ".join(f"{r.image} (label {r.label_idx})" for r in one[~scored].itertuples())
        lines.append(f"- Composites: {len(one)} test images = {kinds.get('photo', 0)} object photos + "
                     f"{kinds.get('composite', 0)} composites (object-background pairs: "
                     f"{one.loc[one['kind'] == 'composite', 'source'].nunique()} distinct pairs); the CIs resample the "
                     f"{objects} object photos (the independent unit). Localisation n = {int(scored.sum())} of "
                     f"{len(one)}" + (f": {unscored} has no box of its label's class." if unscored else "."))
    lines += [f"- The thesis' sample: {THESIS_N} images, {THESIS_MODEL}, its 10-step zero-substrate protocol.",
              f"- Levels: the thesis' insertion AUCs are about {THESIS_INSERTION:g}, ours about 0.5. Insertion AUC is "
              "the area under p(class) as pixels are revealed: its level depends on the model's confidence (Lite0 "
              "vs ResNet-50), the substrate (our rise preset starts from a blur that keeps much of the class "
              "evidence; a zero substrate starts near chance) and the steps. Differences between methods on the "
              "same model, photos and protocol can be compared with the thesis' direction of effect; the levels, and "
              "differences across protocols, cannot."]
    return lines


def sanity_figure(study: Study, threshold: float = SANITY_THRESHOLD, path: str | Path | None = None) -> plt.Figure:
    """The cascade's mean Spearman per method and step with 95% CIs (:func:`plot_randomisation`, the methods
    shifted apart), of :func:`sanity_rows`, with n, the pass threshold and the legend outside the data."""
    rows = sanity_rows(study)[0].rename(columns={"layer": "target_layer", "randomised": "layer"})
    fig = plot_randomisation(rows, dodge=0.12)
    ax = fig.axes[0]
    ax.axhline(threshold, color="C3", ls="--", lw=0.8, label=f"pass threshold {threshold:g}")
    ax.set_title(f"cascading model randomisation, n = {rows['image'].nunique()} photos, mean and 95% BCa CI "
                 "(lower = more model-dependent)", fontsize=10)
    ax.set_xlabel("weights randomised down to")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return save(fig, path)
