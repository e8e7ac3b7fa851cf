"""Faithfulness and localisation metrics of explanation maps, batched, in one namespace.

:mod:`.perturbation`: insertion/deletion curves (substrates, pixel ranking, AUC);
:mod:`.confidence`: Average Drop / Increase in Confidence and ADCC; :mod:`.localisation`:
pointing games and box IoU. The random and Gaussian floors are maps, not metrics
(:mod:`helpers.evaluation.floors`); ROAD is :mod:`helpers.evaluation.road`.

:mod:`.registry` holds :data:`METRICS`, the metric objects of Quantus' families (name, family,
direction, needs, paper): :mod:`.map_complexity` (not ADCC's :func:`complexity`), :mod:`.region`
(localisation against masks), :mod:`.randomisation`, :mod:`.faithfulness` and :mod:`.robustness`
register theirs on import.
"""
from . import faithfulness as _faithfulness  # noqa: F401  (each registers its metrics)
from . import map_complexity as _map_complexity  # noqa: F401
from . import randomisation as _randomisation  # noqa: F401
from . import region as _region  # noqa: F401
from . import robustness as _robustness  # noqa: F401
from .confidence import (
    EXPLANATION_SPACES,
    Explainer,
    adcc,
    complexity,
    confidence_change,
    explanation_images,
    harmonic_mean,
    pearson,
)
from .localisation import (
    box_iou,
    box_mask,
    energy_pointing_game,
    iou,
    largest_region_box,
    pixel_distance_to_box,
    pointing_game,
)
from .perturbation import (
    MODES,
    PRESETS,
    RISE_PIXELS_PER_STEP,
    SUBSTRATES,
    TIE_RESOLUTION,
    auc,
    class_probabilities,
    from_pixels,
    gaussian_blur,
    insertion_deletion,
    insertion_deletion_auc,
    insertion_deletion_curves,
    make_substrate,
    pixel_ranks,
    rise_kernel,
    step_counts,
    tie_orders,
    to_pixels,
)
from .registry import FAMILIES, METRICS, Metric, metric

__all__ = ["EXPLANATION_SPACES", "Explainer", "FAMILIES", "METRICS", "MODES", "Metric", "PRESETS",
           "RISE_PIXELS_PER_STEP", "SUBSTRATES", "TIE_RESOLUTION", "adcc", "auc", "box_iou", "box_mask",
           "class_probabilities", "complexity", "confidence_change", "energy_pointing_game", "explanation_images",
           "from_pixels", "gaussian_blur", "harmonic_mean", "insertion_deletion", "insertion_deletion_auc",
           "insertion_deletion_curves", "iou", "largest_region_box", "make_substrate", "metric", "pearson",
           "pixel_distance_to_box", "pixel_ranks", "pointing_game", "rise_kernel", "step_counts", "tie_orders",
           "to_pixels"]
