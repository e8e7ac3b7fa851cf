"""Noisy linear imputation of removed pixels, the infill of ROAD (Rong et al., ICML 2022).

A removed pixel is set to the weighted mean of its 8 neighbours, side neighbours weighing 1/6 and
diagonal ones 1/12. Known neighbours enter as data, removed ones as unknowns, so the removed
pixels of one image and mask form one sparse linear system, the same matrix for every channel;
Gaussian noise is then added to the imputed pixels only.

Facts taken from the reference code (``NoisyLinearImputer`` in tleemann/road_evaluation's
``imputations.py``, copied unchanged into pytorch-grad-cam's ``metrics/road.py``):

* Neighbours outside the image are dropped *and the remaining weights renormalised*: the
  reference's diagonal is minus the sum of the in-image neighbour weights, so a border pixel is
  the weighted *mean* of its in-image neighbours (a corner pixel: of 3 neighbours, weights
  1/6, 1/6, 1/12 over their sum 5/12), not a sum with the missing weights set to zero.
* The system is the Dirichlet problem of the weighted 8-neighbour graph Laplacian of the image
  grid restricted to the removed pixels: ``A x = b`` with ``A[i, i]`` = sum of pixel i's in-image
  neighbour weights, ``A[i, j]`` = -w_ij for removed neighbours j and ``b[i]`` = sum of w_ik
  v_k over known neighbours k. Every row of the full Laplacian sums to zero (the reference stores
  ``-A`` and ``-b``). ``A`` is symmetric (the weights of offsets d and -d agree) and positive
  definite whenever at least one pixel is known (each 8-connected group of removed pixels then
  touches a known one).
* The noise is ``noise * N(0, 1)`` drawn as a (C, n) tensor over the removed pixels in raster
  order and added after the solve, to the imputed pixels only; nothing is clipped (the result can
  leave [0, 1] by about the noise).

How it is solved here (the reference builds ``A`` with ``lil_matrix`` and calls ``spsolve``),
for every channel at once (three for RGB), one of three ways:

* When at least :data:`GRID_SHARE` of the pixels are removed (MoRF from p = 0.7, LeRF up to
  p = 0.3), by MKL's PARDISO on the whole grid (:func:`solve_on_grid`): the known pixels' rows
  become the identity, so every mask of a grid size has one sparsity pattern, whose ordering and
  symbolic analysis run once; a mask costs one numeric Cholesky factorisation and one solve.
  Without MKL (it ships for x86-64 only), the next way.
* Otherwise the system is selected from the cached weight matrix of the whole grid (sparse row
  and column indexing, no per-pixel Python). A compact hole (MoRF up to about p = 0.5 on a CAM)
  is ordered row by row (or column by column), its band built straight from the pixel offsets and
  solved by LAPACK's banded Cholesky, whose
  blocked dense kernels run several times faster than a sparse LU; a wide one is ordered by a
  geometric nested dissection of the pixel grid (a one-pixel line separates two halves of an
  8-neighbour grid) and factorised by SuperLU in symmetric mode without pivoting
  (:func:`band_axis` picks).

The result equals the reference's to rounding (about 1e-13) every way.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch
from scipy.linalg import solveh_banded
from threadpoolctl import ThreadpoolController

from . import mkl_solvers

#: Neighbour offsets (row, column) and weights of the imputation (sides 1/6, diagonals 1/12).
NEIGHBOURS: tuple[tuple[int, int, float], ...] = tuple(
    (dr, dc, 1 / 6 if dr == 0 or dc == 0 else 1 / 12) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))

#: Sub-grids of at most this many rows and columns are not dissected further.
DISSECTION_LEAF = 4
#: A system with n unknowns and half-bandwidth b is solved banded while b^2 <= BAND_LIMIT sqrt(n) (:func:`band_axis`).
BAND_LIMIT = 180.0
#: From this share of removed pixels on, a system is solved on the whole grid by PARDISO (:func:`solve_on_grid`),
#: whose cost hardly depends on the mask; below it, SuperLU on the removed pixels alone is as fast or faster (measured).
GRID_SHARE = 0.6


@functools.lru_cache(maxsize=8)
def dissection_order(height: int, width: int, leaf: int = DISSECTION_LEAF) -> np.ndarray:
    """A nested-dissection order of the pixels of an ``height`` x ``width`` grid (flat indices).

    The box is cut along its longer side by its middle line; the pixels of either half come
    first (recursively), the pixels on the line last. Boxes of at most ``leaf`` rows and columns
    keep raster order. A one-pixel line separates the two halves of an 8-neighbour grid, so the
    order restricted to any subset of pixels is a nested dissection of that subset too.
    Vectorised: each pixel carries its path as base-3 digits (0 first half, 1 second half,
    2 on the cut), one digit per level. Cached per grid size; read-only.
    """
    rows, cols = (g.ravel() for g in np.indices((height, width)))
    n = rows.size
    lo_r, hi_r, lo_c, hi_c = np.zeros(n, int), np.full(n, height), np.zeros(n, int), np.full(n, width)
    key = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    while True:
        tall, wide = hi_r - lo_r, hi_c - lo_c
        split = active & (np.maximum(tall, wide) > leaf)
        if not split.any():
            order = np.argsort(key, kind="stable")
            order.flags.writeable = False
            return order
        by_row = tall >= wide
        pos = np.where(by_row, rows, cols)
        mid = (np.where(by_row, lo_r, lo_c) + np.where(by_row, hi_r, hi_c)) // 2
        digit = np.where(pos < mid, 0, np.where(pos > mid, 1, 2))
        key = 3 * key + np.where(split, digit, 0)
        first, second = split & (digit == 0), split & (digit == 1)
        hi_r, hi_c = np.where(first & by_row, mid, hi_r), np.where(first & ~by_row, mid, hi_c)
        lo_r, lo_c = np.where(second & by_row, mid + 1, lo_r), np.where(second & ~by_row, mid + 1, lo_c)
        active = split & (digit != 2)


@functools.lru_cache(maxsize=8)
def grid_weights(height: int, width: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The neighbour weights of an ``height`` x ``width`` grid: ``(W, degree)``.

    ``W`` is the (HW, HW) CSR matrix of the weights w_ij of :data:`NEIGHBOURS` between in-image
    pixels (flat raster indices), ``degree`` (HW,) its row sums, the diagonal of the Laplacian.
    Cached per grid size; read-only.
    """
    rows, cols = np.divmod(np.arange(height * width), width)
    pixel, neighbour, weight = [], [], []
    for dr, dc, w in NEIGHBOURS:
        inside = (0 <= rows + dr) & (rows + dr < height) & (0 <= cols + dc) & (cols + dc < width)
        pixel.append(np.flatnonzero(inside))
        neighbour.append((rows[inside] + dr) * width + cols[inside] + dc)
        weight.append(np.full(int(inside.sum()), w))
    grid = sp.csr_matrix((np.concatenate(weight), (np.concatenate(pixel), np.concatenate(neighbour))),
                         shape=(height * width,) * 2)
    degree = np.asarray(grid.sum(axis=1)).ravel()
    for a in (grid.data, grid.indices, grid.indptr, degree):
        a.flags.writeable = False
    return grid, degree


@functools.lru_cache(maxsize=8)
def grid_laplacian(height: int, width: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The upper triangle of the ``height`` x ``width`` grid's Laplacian, ``(U, rows, cols)``: ``U`` in
    CSR with sorted indices (each row's degree first, then -w_ij of its later neighbours), and
    each stored entry's row and column. Cached per grid size; read-only."""
    grid, degree = grid_weights(height, width)
    n, off = height * width, sp.triu(grid, k=1, format="coo")
    rows, cols = np.concatenate([np.arange(n), off.row]), np.concatenate([np.arange(n), off.col])
    upper = sp.csr_matrix((np.concatenate([degree, -off.data]), (rows, cols)), shape=(n, n))
    upper.sort_indices()
    rows = np.repeat(np.arange(n), np.diff(upper.indptr))
    for a in (upper.data, upper.indices, upper.indptr, rows):
        a.flags.writeable = False
    return upper, rows, upper.indices


def solve_on_grid(pixels: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The removed pixels' values (C, n), in raster order, by PARDISO (:mod:`helpers.evaluation.mkl_solvers`):
    the grid's whole Laplacian with the known pixels' rows and columns set to the identity and
    their right-hand side to 0 (so they solve to 0), one pattern for every mask of a grid size."""
    h, w = removed.shape
    upper, rows, cols = grid_laplacian(h, w)
    flat = removed.ravel()
    values = np.where(flat[rows] & flat[cols], upper.data, 0.0)
    values[upper.indptr[:-1][~flat]] = 1.0                      # each row's first entry is its diagonal
    grid, _ = grid_weights(h, w)
    rhs = grid @ (pixels.reshape(len(pixels), -1) * ~flat).T    # (HW, C): the known neighbours' weighted sum
    rhs[~flat] = 0.0
    return mkl_solvers.solver((h, w), upper).solve(values, rhs)[flat].T


def imputation_system(image: np.ndarray, removed: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """The system ``A x = b`` of the removed pixels of ``image`` (C, H, W): ``(A, b, pixels)``.

    ``A`` is (n, n) (module docstring), ``b`` is (n, C), and unknown i is the pixel
    ``pixels[:, i]`` = (row, column); the unknowns are the removed pixels in the grid's
    :func:`dissection_order` (SuperLU factorises in that order). Built from the
    cached grid weights by sparse row and column selection (no per-pixel Python).
    """
    h, w = removed.shape
    order = dissection_order(h, w)
    unknown = order[removed.ravel()[order]]
    grid, degree = grid_weights(h, w)
    coupling = grid[unknown]                                    # (n, HW): each removed pixel's neighbour weights
    b = coupling @ (image.reshape(len(image), -1) * ~removed.ravel()).T
    a = (sp.diags(degree[unknown]) - coupling[:, unknown]).tocsc()
    return a, b, np.stack(np.divmod(unknown, w))


def band_axis(removed: np.ndarray) -> str | None:
    """``"rows"`` (the removed pixels row by row) or ``"columns"`` (column by column), whichever gives
    ``removed``'s system the narrower band (the span across the other axis), or None when a sparse
    solve is cheaper: a banded Cholesky costs about n b^2 for n
    unknowns and half-bandwidth b (at most the span + 1), a sparse LU in nested dissection about
    n^1.5, and on 224 x 224 CAM-ordered masks LAPACK's banded solve is faster while
    b^2 < :data:`BAND_LIMIT` sqrt(n) (measured, both ways)."""
    rows, cols = np.nonzero(removed)
    by_column = np.ptp(cols) > np.ptp(rows)
    span = 1 + int(np.ptp(rows) if by_column else np.ptp(cols))
    if (span + 1) ** 2 > BAND_LIMIT * np.sqrt(len(rows)):
        return None
    return "columns" if by_column else "rows"


#: The neighbours that come later in raster order.
FORWARD: tuple[tuple[int, int, float], ...] = tuple(n for n in NEIGHBOURS if n[:2] > (0, 0))


def banded_system(image: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The system of the removed pixels of ``image`` (C, H, W) in raster order, ``(band, b)``: ``A``'s
    upper band in LAPACK's storage (``band[kd + i - j, j] = A[i, j]``, shape (kd + 1, n)) and ``b``
    (n, C); built from the pixel offsets alone (no sparse matrix)."""
    h, w = removed.shape
    # On the grid padded by one pixel of zeros (known, valued 0: outside the image, weighing nothing),
    # each neighbour of a removed pixel is its flat index plus a constant.
    padded = np.pad(removed, 1)
    flat = np.flatnonzero(padded)
    rank = np.full(padded.size, -1, dtype=np.int32)
    rank[flat] = np.arange(len(flat))
    known = np.pad(image, ((0, 0), (1, 1), (1, 1))).reshape(len(image), -1)
    known[:, flat] = 0.0                                                 # the removed pixels: unknowns, not data
    b = np.zeros((len(image), len(flat)))
    couplings = []
    for dr, dc, weight in NEIGHBOURS:
        neighbour = flat + dr * (w + 2) + dc
        b += weight * known[:, neighbour]
        if (dr, dc, weight) in FORWARD:
            later = rank[neighbour]
            couplings.append((np.flatnonzero(later >= 0), later[later >= 0], weight))
    kd = max((int((j - i).max()) for i, j, _ in couplings if len(i)), default=0)
    band = np.zeros((kd + 1, len(flat)), order="F")                     # LAPACK's layout: no copy on the way in
    band[kd] = grid_weights(h, w)[1][removed.ravel()]
    for i, j, weight in couplings:
        band[kd + i - j, j] = -weight
    return band, b.T


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def solve_banded(band: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The solution (n, C) of the banded SPD system ``(band, b)`` of :func:`banded_system` by LAPACK's
    banded Cholesky (``pbsv``), in place (``band`` and ``b`` are overwritten): MKL's where it loaded
    (:mod:`helpers.evaluation.mkl_solvers`), else SciPy's with BLAS on one thread (on these sizes a
    second thread gains little, and on a busy machine OpenBLAS's waiting threads made the banded
    solve 10x slower, measured)."""
    if mkl_solvers.available():
        return mkl_solvers.banded_cholesky_solve(band, b)
    with _blas().limit(limits=1, user_api="blas"):
        return solveh_banded(band, b, overwrite_ab=True, overwrite_b=True, check_finite=False)


def solve_sparse(a: sp.csc_matrix, b: np.ndarray) -> np.ndarray:
    """The solution (n, C) of ``A x = b`` (A symmetric positive definite, in the order it comes) by one
    SuperLU factorisation (symmetric mode, no pivoting) for every column of ``b``."""
    with _blas().limit(limits=1, user_api="blas"):
        options = {"SymmetricMode": True, "Equil": False}
        return sla.splu(a, permc_spec="NATURAL", diag_pivot_thresh=0.0, options=options).solve(b)


def _check(image: torch.Tensor, removed: torch.Tensor, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask as NumPy arrays, or a ValueError naming the problem (checked in NumPy: on a
    busy machine torch's threaded element-wise kernels cost more than the solve on these sizes)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] < 1:
        raise ValueError(f"image must be a (C, H, W) tensor; got {_describe(image)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be floats in [0, 1]; got dtype {image.dtype}")
    if not isinstance(removed, torch.Tensor) or removed.dtype != torch.bool:
        raise ValueError(f"removed must be a bool tensor (True = removed); got {_describe(removed)}")
    if tuple(removed.shape) != tuple(image.shape[1:]):
        raise ValueError(f"removed must have the image's shape {tuple(image.shape[1:])}; got {tuple(removed.shape)}")
    wide = image.detach().cpu()
    pixels = (wide if wide.dtype in (torch.float32, torch.float64) else wide.double()).numpy()
    mask = removed.detach().cpu().numpy()
    finite = np.isfinite(pixels)
    if not finite.all():
        raise ValueError(f"image has {int((~finite).sum())} non-finite values (NaN or inf)")
    if pixels.min() < 0 or pixels.max() > 1:
        raise ValueError(f"image values must lie in [0, 1] (pixel space, before normalisation); got "
                         f"[{float(pixels.min()):.4g}, {float(pixels.max()):.4g}]")
    if mask.all():
        raise ValueError("every pixel is removed: nothing is known to impute from")
    if not mask.any():
        raise ValueError("no pixel is removed: there is nothing to impute")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0; got {noise}")
    return pixels, mask


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__


def noisy_linear_impute(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` (C, H, W) in [0, 1] (3 channels for RGB, 1 for grey) with the ``removed`` (H, W) pixels
    imputed (module docstring).

    The imputed pixels get ``noise * N(0, 1)`` added, drawn from ``generator`` (torch's global
    generator when None) as a (C, n) tensor over the removed pixels in raster order, as the
    reference draws it. Returns a new tensor of the image's dtype and device. Bad input (shape,
    dtype, non-finite values, values outside [0, 1], a mask of another shape, all or no pixels
    removed, negative noise) is a ValueError.
    """
    pixels, mask = _check(image, removed, noise)
    out = pixels.astype(np.float64)
    if np.count_nonzero(mask) >= GRID_SHARE * mask.size and mkl_solvers.available():
        out[:, mask] = solve_on_grid(out, mask)
    elif (axis := band_axis(mask)) is not None:
        along, where = (out.transpose(0, 2, 1), mask.T) if axis == "columns" else (out, mask)
        along[:, where] = solve_banded(*banded_system(along, where)).T     # a view: writes into out
    else:
        a, b, (rows, cols) = imputation_system(out, mask)
        out[:, rows, cols] = solve_sparse(a, b).T
    if noise > 0:
        out[:, mask] += noise * torch.randn((len(out), int(mask.sum())), generator=generator).numpy()
    return torch.from_numpy(out.astype(pixels.dtype)).to(dtype=image.dtype, device=image.device)
