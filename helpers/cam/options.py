"""Method options as small frozen objects: ``methods=[ScoreCAM(top_k=32), "gradcam", Hybrid(alpha=0.7)]``.

A method with options has one frozen dataclass here whose fields are the keyword options of its
registered function (:func:`helpers.cam.engine.register` ties the name to the function and the class);
a name given as a string runs with the defaults. :class:`Smooth` wraps a gradient method in
SmoothGrad and :class:`LayerFusion` holds the multi-layer fusion's gamma. Every option is checked
when the object is made, so a bad one fails before any forward.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..config import SEED
from .maps import check_alpha

#: Score-CAM's default number of channels (largest mean activation) that mask the input. All
#: 1280 channels of Lite0's head would cost 1280 forwards per image; see the README's methods
#: table for the measured cost of this default.
SCORECAM_TOP_K = 32
#: Default number of images per forward in Score-CAM and Recipro-CAM.
FORWARD_BATCH = 64
#: Score-CAM variants: "softmax" = the paper's Algorithm 1 (softmax over the kept channels' masked
#: logits); "probability" = each masked input's class probability as weight, top-k channels; "official"
#: = the authors' released code (haofanwang/Score-CAM): probability weights, ALL channels (``top_k``
#: ignored), channels whose upsampled map is constant skipped (their min-max mask is undefined).
SCORECAM_VARIANTS: tuple[str, ...] = ("softmax", "probability", "official")
#: Recipro-CAM's spatial masks (:func:`helpers.cam.methods.spatial_masks`).
RECIPRO_KERNELS: tuple[str, ...] = ("onehot", "gaussian")
#: KPCA-CAM's kernels (:func:`helpers.cam.projection_methods.kernel_matrix`), named as in scikit-learn.
KPCA_KERNELS: tuple[str, ...] = ("sigmoid", "rbf", "poly", "linear", "cosine")
#: Ablated channels per tail forward in Ablation-CAM (pytorch-grad-cam's default batch).
ABLATION_BATCH = 32


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


@dataclass(frozen=True)
class MethodOptions:
    """Base of a registered method's options; ``name`` is the method, the fields are its keyword options."""

    name: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """The fields as keyword arguments of the method's function."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Hybrid(MethodOptions):
    """The hybrid norm(Grad-CAM)^alpha * norm(LayerCAM)^(1-alpha); ``alpha`` in [0, 1]."""

    name: ClassVar[str] = "hybrid"
    alpha: float = 0.7

    def __post_init__(self) -> None:
        check_alpha(self.alpha)


@dataclass(frozen=True)
class ScoreCAM(MethodOptions):
    """Score-CAM: keep the ``top_k`` channels of largest mean activation (None: all), channel weights
    ``weights`` (:data:`SCORECAM_VARIANTS`), ``batch_size`` masked images per forward."""

    name: ClassVar[str] = "scorecam"
    top_k: int | None = SCORECAM_TOP_K
    weights: str = "softmax"
    batch_size: int = FORWARD_BATCH

    def __post_init__(self) -> None:
        if self.weights not in SCORECAM_VARIANTS:
            raise ValueError(f"unknown Score-CAM weights {self.weights!r}; use one of {', '.join(SCORECAM_VARIANTS)}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        _check_batch_size(self.batch_size)


@dataclass(frozen=True)
class ReciproCAM(MethodOptions):
    """Recipro-CAM: the spatial mask ``kernel`` (:data:`RECIPRO_KERNELS`), ``batch_size`` masked maps per forward."""

    name: ClassVar[str] = "reciprocam"
    kernel: str = "onehot"
    batch_size: int = FORWARD_BATCH

    def __post_init__(self) -> None:
        if self.kernel not in RECIPRO_KERNELS:
            raise ValueError(f"unknown Recipro-CAM kernel {self.kernel!r}; use one of {', '.join(RECIPRO_KERNELS)}")
        _check_batch_size(self.batch_size)


@dataclass(frozen=True)
class EigenCAM(MethodOptions):
    """Eigen-CAM: ``center`` the positions' feature vectors before the SVD (principal components, as
    pytorch-grad-cam) or not (the paper's Eq. 5, the SVD of the raw activations)."""

    name: ClassVar[str] = "eigencam"
    center: bool = True


@dataclass(frozen=True)
class KPCACAM(MethodOptions):
    """KPCA-CAM: the ``kernel`` (:data:`KPCA_KERNELS`) and its ``gamma`` (None: 1 / channels, as scikit-learn)."""

    name: ClassVar[str] = "kpcacam"
    kernel: str = "sigmoid"
    gamma: float | None = None

    def __post_init__(self) -> None:
        if self.kernel not in KPCA_KERNELS:
            raise ValueError(f"unknown KPCA-CAM kernel {self.kernel!r}; use one of {', '.join(KPCA_KERNELS)}")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 or None, got {self.gamma}")


@dataclass(frozen=True)
class AblationCAM(MethodOptions):
    """Ablation-CAM: ``batch_size`` ablated maps per forward of the network after the layer (where no
    closed form applies)."""

    name: ClassVar[str] = "ablationcam"
    batch_size: int = ABLATION_BATCH

    def __post_init__(self) -> None:
        _check_batch_size(self.batch_size)


@dataclass(frozen=True)
class FinerCAM(MethodOptions):
    """Finer-CAM: the explained class against its ``comparisons`` most similar classes (closest logits),
    each subtracted with strength ``alpha``."""

    name: ClassVar[str] = "finercam"
    alpha: float = 1.0
    comparisons: int = 3

    def __post_init__(self) -> None:
        if self.comparisons < 1:
            raise ValueError(f"comparisons must be >= 1, got {self.comparisons}")


@dataclass(frozen=True)
class Smooth:
    """SmoothGrad around a gradient method (a name or its options): its raw maps averaged over ``n``
    noisy copies x + N(0, (noise * value range)^2), seeded by ``seed``; ``"smooth-<m>"`` is ``Smooth("<m>")``."""

    method: str | MethodOptions = "gradcam"
    n: int = 8
    noise: float = 0.15
    seed: int = SEED

    def __post_init__(self) -> None:
        if self.n < 1 or self.noise < 0:
            raise ValueError(f"SmoothGrad needs n >= 1 and noise >= 0, got n={self.n} and noise={self.noise}")

    @property
    def name(self) -> str:
        """``smooth-`` + the wrapped method's name."""
        inner = self.method if isinstance(self.method, str) else self.method.name
        return f"smooth-{inner}"


@dataclass(frozen=True)
class LayerFusion:
    """Multi-layer fusion (:func:`helpers.cam.maps.fuse_layers`): shallow maps rescaled by tanh(gamma * M)."""

    gamma: float = 2.0

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")


#: The paper's fusion, gamma = 2: the default of :func:`helpers.cam.engine.compute_cams`.
DEFAULT_FUSION = LayerFusion()
