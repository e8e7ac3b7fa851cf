"""The protocol that ran, in words: what REPORT.md repeats under "Protocol" (:func:`describe_protocol`)."""
from __future__ import annotations

from ..evaluation import metrics as M
from ..evaluation.runner import SMALL_BOX_FRACTION, EvalConfig


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
