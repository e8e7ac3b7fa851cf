"""Robustness metrics: how much a map changes when the input is slightly perturbed, batched.

Max- and avg-sensitivity (Yeh et al. 2019), the local Lipschitz estimate (Alvarez-Melis and Jaakkola
2018) and relative input stability (Agarwal et al. 2022). Each draws ``nr_samples`` noisy copies of every
image and re-explains them with the CAM method ``method`` through :func:`helpers.cam.engine.compute_cams`,
``chunk_size`` copies per pass (one forward and one backward each). Options keep Quantus 0.6.0's names and
defaults; ``noise`` (nr_samples, N, C, H, W) may be given instead of drawn (seeded by ``seed``). With
``return_nan_when_prediction_changes``, copies whose top-1 class differs from the image's are left out,
and a photo scores NaN only when every copy changed its prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ...cam.backend import infer
from ...cam.bundle import ModelBundle
from ...cam.checks import check_class_idx, check_images
from ...cam.engine import Method, compute_cams
from ...config import SEED
from .registry import MapOptions, attributions, metric

#: (map, perturbed map, image, perturbed image), each (B, D) float64 -> (B,)
Statistic = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RobustnessOptions(MapOptions):
    """What the robustness metrics share: samples, the re-explaining method, copies per pass, the noise."""

    normalise: bool = False
    nr_samples: int = 200
    method: Method = "gradcam"
    chunk_size: int = 32
    seed: int = SEED
    return_nan_when_prediction_changes: bool = False
    noise: torch.Tensor | None = field(default=None, compare=False)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Noise of ``shape`` from this metric's distribution."""
        raise NotImplementedError(f"{type(self).__name__} states no noise distribution")


@dataclass(frozen=True)
class SensitivityOptions(RobustnessOptions):
    """Uniform noise in [-lower_bound, lower_bound], or in [lower_bound, upper_bound] when that is given."""

    lower_bound: float = 0.2
    upper_bound: float | None = None

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Uniform noise of ``shape`` (Quantus' ``uniform_noise``)."""
        low, high = (-self.lower_bound, self.lower_bound) if self.upper_bound is None else \
            (self.lower_bound, self.upper_bound)
        return low + (high - low) * torch.rand(shape, generator=generator)


@dataclass(frozen=True)
class LipschitzOptions(RobustnessOptions):
    """Gaussian noise N(perturb_mean, perturb_std^2); maps divided by their maximum (Quantus' defaults)."""

    normalise: bool = True
    perturb_mean: float = 0.0
    perturb_std: float = 0.1

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise of ``shape`` (Quantus' ``gaussian_noise``)."""
        return self.perturb_mean + self.perturb_std * torch.randn(shape, generator=generator)


@dataclass(frozen=True)
class StabilityOptions(SensitivityOptions):
    """Uniform noise in [0.02, 0.2]; ``eps_min`` guards the divisions (Quantus' defaults)."""

    lower_bound: float = 0.02
    upper_bound: float | None = 0.2
    eps_min: float = 1e-6
    return_nan_when_prediction_changes: bool = True


def over_samples(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                 options: RobustnessOptions, statistic: Statistic) -> torch.Tensor:
    """``statistic`` of every image and noisy copy, (N, nr_samples); NaN for copies left out.

    Copy j is sample j // N of image j % N (the order of Quantus' draws); each chunk of copies is
    explained, for the image's class, in one :func:`compute_cams` pass.
    """
    check_images(images, bundle, maps)
    n, samples = len(images), options.nr_samples
    idx = check_class_idx(class_idx, n, len(bundle.class_names))
    if options.noise is not None and tuple(options.noise.shape) != (samples, *images.shape):
        raise ValueError(f"noise must be (nr_samples, N, C, H, W) = {(samples, *images.shape)}; "
                         f"got {tuple(options.noise.shape)}")
    a = attributions(maps, options).flatten(1)
    with torch.inference_mode():
        top = infer(bundle, images).argmax(1).cpu()
    gen = torch.Generator().manual_seed(options.seed)
    out = torch.empty(n * samples, dtype=torch.float64)
    owner = torch.arange(n).repeat(samples)
    for start in range(0, n * samples, options.chunk_size):
        o = owner[start:start + options.chunk_size]
        eps = options.noise.flatten(0, 1)[start:start + len(o)] if options.noise is not None else \
            options.draw((len(o), *images.shape[1:]), gen)
        x = images[o] + eps.to(images)
        cams = compute_cams(bundle, x, options.method, target=idx[o].tolist())
        value = statistic(a[o], attributions(next(iter(cams.values())), options).flatten(1),
                          images[o].detach().flatten(1).double().cpu(), x.detach().flatten(1).double().cpu())
        if options.return_nan_when_prediction_changes:
            value[cams.logits.argmax(1).cpu() != top[o]] = float("nan")
        out[start:start + len(o)] = value
    return out.view(samples, n).T


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0 / 0 = 0 (an all-zero map that stays zero has not changed)."""
    return torch.where(num == 0, 0.0, num / den)


def _sensitivity(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ratio((a - b).norm(dim=1), a.norm(dim=1))


def _nanmax(values: torch.Tensor) -> torch.Tensor:
    """Maximum of each row ignoring NaN; NaN where the whole row is."""
    best = values.nan_to_num(nan=-torch.inf).amax(dim=1)
    return torch.where(values.isnan().all(dim=1), float("nan"), best)


YEH = "Yeh et al. 2019, On the (in)fidelity and sensitivity of explanations (NeurIPS)"


@metric("max_sensitivity", SensitivityOptions, family="robustness", direction="lower", needs=("model", "explain"),
        reference=YEH)
def max_sensitivity(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                    options: SensitivityOptions) -> torch.Tensor:
    """Largest ``||a(x) - a(x')|| / ||a(x)||`` (Frobenius) over noisy copies x' (Yeh et al. 2019)."""
    return _nanmax(over_samples(bundle, images, maps, class_idx, options, _sensitivity))


@metric("avg_sensitivity", SensitivityOptions, family="robustness", direction="lower", needs=("model", "explain"),
        reference=YEH)
def avg_sensitivity(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor, class_idx: int | Sequence[int],
                    options: SensitivityOptions) -> torch.Tensor:
    """Mean ``||a(x) - a(x')|| / ||a(x)||`` (Frobenius) over noisy copies x' (Yeh et al. 2019)."""
    return over_samples(bundle, images, maps, class_idx, options, _sensitivity).nanmean(dim=1)


def _lipschitz(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=1) / ((x - y).norm(dim=1) + 1e-10)


@metric("local_lipschitz_estimate", LipschitzOptions, family="robustness", direction="lower",
        needs=("model", "explain"), reference="Alvarez-Melis and Jaakkola 2018, On the robustness of "
                                              "interpretability methods (ICML workshop)")
def local_lipschitz_estimate(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                             class_idx: int | Sequence[int], options: LipschitzOptions) -> torch.Tensor:
    """Largest ``||a(x) - a(x')||_2 / (||x - x'||_2 + 1e-10)`` over Gaussian copies x' (Alvarez-Melis and
    Jaakkola 2018)."""
    return _nanmax(over_samples(bundle, images, maps, class_idx, options, _lipschitz))


@metric("relative_input_stability", StabilityOptions, family="robustness", direction="lower",
        needs=("model", "explain"), reference="Agarwal et al. 2022, Rethinking stability for attribution-based "
                                              "explanations (ICLR workshop)")
def relative_input_stability(bundle: ModelBundle, images: torch.Tensor, maps: torch.Tensor,
                             class_idx: int | Sequence[int], options: StabilityOptions) -> torch.Tensor:
    """Largest ``||(a - a') / a|| / max(||(x - x') / x||, eps_min)`` over copies x' that keep the prediction
    (Agarwal et al. 2022; zeros of a and x divide as ``eps_min``).

    The paper maximises over the copies that keep the prediction; Quantus 0.6.0 marks the others NaN and
    then takes ``np.max``, so one changed prediction makes the photo NaN. Here the others are left out.
    """
    eps = options.eps_min

    def stability(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        num = ((a - b) / (a + (a == 0) * eps)).norm(dim=1)
        den = ((x - y) / (x + (x == 0) * eps)).norm(dim=1)
        return num / (den + (den == 0) * eps)
    return _nanmax(over_samples(bundle, images, maps, class_idx, options, stability))
