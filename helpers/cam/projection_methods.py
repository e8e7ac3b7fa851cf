"""Class-agnostic CAMs that project the layer's activations on their first (kernel) principal component.

Both methods read only the activations A (N, K, h, w): every position (i, j) is a K-dimensional
feature vector, a row of the (hw x K) matrix X. They need no gradient and no class, so they
explain what the layer sees, not why a class was chosen.

**The sign rule.** An eigenvector is defined up to its sign (SVD gives U S V^T = (-U) S (-V)^T), and
LAPACK's or ARPACK's choice is arbitrary: after the ReLU a flipped component keeps the other
half of the map. pytorch-grad-cam leaves Eigen-CAM's sign to LAPACK and KPCA-CAM's to
scikit-learn's ``svd_flip`` (largest entry positive). Here both are oriented by one stated rule
(:func:`orient`): the projection is flipped when its covariance over the positions with the
channels' total activation sum_k A^k is negative, i.e. the map points to where the layer is most
active. For Eigen-CAM on centred features this is the rule sum_k V_1k >= 0 (cov = s_1^2 V_1 . 1 / hw).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .engine import register  # via the engine: its built-ins register first
from .options import KPCA_KERNELS, KPCACAM, EigenCAM

#: Kernel parameters of scikit-learn's ``KernelPCA`` defaults (polynomial degree, offset of poly and sigmoid).
POLY_DEGREE = 3
COEF0 = 1.0


def positions(acts: torch.Tensor, center: bool = True) -> torch.Tensor:
    """The activations as (N, hw, K) feature vectors in float64, centred over the positions if ``center``."""
    x = acts.flatten(2).transpose(1, 2).double()
    return x - x.mean(dim=1, keepdim=True) if center else x


def orient(projection: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``projection`` (N, hw) with its sign chosen so that it covaries non-negatively with sum_k A^k (N, K, h, w)."""
    total = acts.flatten(2).sum(dim=1).to(projection)
    cov = ((projection - projection.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1)
    return torch.where(cov < 0, -1.0, 1.0).to(projection)[:, None] * projection


def _as_map(projection: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """The oriented projection (N, hw) as a non-negative map (N, h, w) in the activations' dtype."""
    n, _, h, w = acts.shape
    return F.relu(orient(projection, acts)).view(n, h, w).to(acts.dtype)


@register("eigencam", EigenCAM)
def eigencam(acts: torch.Tensor, center: bool = True) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020, Eq. 5): the activations projected on their first principal component.

    With X (hw x K) the positions' feature vectors and X = U S V^T its SVD, the map is X V_1, the
    projection on the first right singular vector, oriented by the module's sign rule, ReLU'd.
    The paper decomposes the raw activations; pytorch-grad-cam centres the columns first (so V_1
    is the direction of largest variance over the positions), which is the default here for
    agreement (``center=False`` gives the paper's uncentred SVD; on non-negative activations its
    V_1 is non-negative and the map is close to the mean activation). All-zero activations give zeros.
    """
    x = positions(acts, center)
    v1 = torch.linalg.svd(x, full_matrices=False).Vh[:, 0, :]
    return _as_map(torch.einsum("npk,nk->np", x, v1), acts)


def kernel_matrix(x: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """Gram matrices (N, P, P) of feature vectors (N, P, K), with scikit-learn's kernel definitions and defaults.

    sigmoid tanh(g <x, y> + 1), rbf exp(-g |x - y|^2), poly (g <x, y> + 1)^3, linear <x, y>,
    cosine <x, y> / (|x| |y|) (0 for a zero vector); ``gamma`` g defaults to 1 / K.
    """
    if kernel not in KPCA_KERNELS:
        raise ValueError(f"unknown KPCA-CAM kernel {kernel!r}; use one of {', '.join(KPCA_KERNELS)}")
    g = 1.0 / x.shape[-1] if gamma is None else gamma
    dots = x @ x.transpose(1, 2)
    if kernel == "sigmoid":
        return torch.tanh(g * dots + COEF0)
    if kernel == "poly":
        return (g * dots + COEF0) ** POLY_DEGREE
    if kernel == "rbf":
        return torch.exp(-g * torch.cdist(x, x).pow(2))
    if kernel == "cosine":
        unit = F.normalize(x, dim=-1)
        return unit @ unit.transpose(1, 2)
    return dots


def first_kernel_component(gram: torch.Tensor) -> torch.Tensor:
    """The points' projections (N, P) on the first kernel principal component, as ``KernelPCA.fit_transform``:
    the doubly centred Gram matrix's top eigenvector times sqrt(its eigenvalue), 0 when that is <= 0."""
    centred = gram - gram.mean(1, keepdim=True) - gram.mean(2, keepdim=True) + gram.mean((1, 2), keepdim=True)
    values, vectors = torch.linalg.eigh(centred)
    return vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()


@register("kpcacam", KPCACAM)
def kpcacam(acts: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """KPCA-CAM (Karmani et al. 2024): Eigen-CAM with kernel PCA in place of PCA.

    The positions' centred feature vectors X (hw x K) give a Gram matrix k(x_p, x_q)
    (:func:`kernel_matrix`, default the sigmoid kernel with gamma = 1/K, as pytorch-grad-cam's
    ``KPCA_CAM``, which calls scikit-learn's ``KernelPCA``); the map is each position's projection
    on the first principal component in the kernel's feature space (:func:`first_kernel_component`),
    oriented by the module's sign rule (scikit-learn instead makes the eigenvector's largest entry
    positive), ReLU'd. As pytorch-grad-cam, X is centred before the kernel.
    """
    x = positions(acts)
    return _as_map(first_kernel_component(kernel_matrix(x, kernel, gamma)), acts)
