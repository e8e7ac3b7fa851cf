"""Intel MKL's solvers for ROAD's imputation systems: PARDISO for the wide ones, with one ordering and
symbolic analysis per grid size, and LAPACK's banded Cholesky for the compact ones.

ROAD imputes up to 90% of an image's pixels, and a sparse direct solve of such a system spends
much of its time finding an ordering and the factor's structure anew. Here every system of an
``H`` x ``W`` grid is the grid's whole Laplacian with the rows and columns of the known pixels
replaced by the identity (their right-hand side is 0, so they solve to 0 and drop out; the
removed pixels' rows are the imputation's). That matrix has the same sparsity pattern for every
mask, so PARDISO's analysis (METIS ordering, symbolic factorisation) runs once per grid size and
thread, and each mask costs one numeric Cholesky factorisation and one solve for the three
channels. A compact hole's banded system goes to MKL's ``LAPACKE_dpbsv``, measured 1.7x faster
here than OpenBLAS's on these bands. MKL runs sequentially (one thread, like the reference's SciPy
solve).

MKL comes from the ``mkl`` wheel (x86-64 only); :func:`available` says whether it loaded, and the
imputation falls back to SciPy (SuperLU, OpenBLAS's LAPACK) where it did not (same result to rounding).
"""
from __future__ import annotations

import ctypes
import functools
import glob
import site
import sys
import threading
from ctypes.util import find_library

import numpy as np
import scipy.sparse as sp

#: PARDISO's matrix type: real symmetric positive definite.
SPD = 2
_SEQUENTIAL, _LP64 = 1, 0


@functools.cache
def _library() -> ctypes.CDLL | None:
    """MKL's single dynamic library, set to sequential threading and 32-bit integers, or None."""
    names = [find_library("mkl_rt")] + sorted(
        glob.glob(f"{sys.prefix}/lib*/libmkl_rt.so*") + glob.glob(f"{site.USER_BASE}/lib*/libmkl_rt.so*"), key=len)
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.MKL_Set_Threading_Layer(ctypes.c_int(_SEQUENTIAL))
        lib.MKL_Set_Interface_Layer(ctypes.c_int(_LP64))
        return lib
    return None


def available() -> bool:
    """Whether MKL's PARDISO could be loaded."""
    return _library() is not None


class _Pardiso:
    """One PARDISO handle for the SPD matrices of one sparsity pattern (upper triangle, CSR, 0-based)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        self.n = len(indptr) - 1
        self.indptr, self.indices = indptr.astype(np.int32), indices.astype(np.int32)
        self.handle = np.zeros(64, dtype=np.int64)
        self.iparm = np.zeros(64, dtype=np.int32)
        self.iparm[[0, 1, 34]] = 1, 2, 1        # own parameters; METIS nested dissection; 0-based indices
        self.perm = np.zeros(self.n, dtype=np.int32)
        self.analysed = False

    def _call(self, phase: int, values: np.ndarray, b: np.ndarray, x: np.ndarray) -> None:
        i32, error = ctypes.c_int32, ctypes.c_int32(0)
        nrhs = 1 if b.ndim == 1 else b.shape[1]
        _library().pardiso(
            self.handle.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i32(1)), ctypes.byref(i32(1)),
            ctypes.byref(i32(SPD)), ctypes.byref(i32(phase)), ctypes.byref(i32(self.n)),
            values.ctypes.data_as(ctypes.c_void_p), self.indptr.ctypes.data_as(ctypes.c_void_p),
            self.indices.ctypes.data_as(ctypes.c_void_p), self.perm.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(i32(nrhs)), self.iparm.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i32(0)),
            b.ctypes.data_as(ctypes.c_void_p), x.ctypes.data_as(ctypes.c_void_p), ctypes.byref(error))
        if error.value != 0:
            raise RuntimeError(f"PARDISO phase {phase} failed with error {error.value} (n = {self.n})")

    def solve(self, values: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The solution of ``A x = b`` for ``A`` with this pattern and ``values``; ``b`` (n, k)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        rhs = np.asfortranarray(b, dtype=np.float64)
        x = np.zeros_like(rhs)
        if not self.analysed:
            self._call(11, values, rhs, x)
            self.analysed = True
        self._call(22, values, rhs, x)
        self._call(33, values, rhs, x)
        return np.ascontiguousarray(x)

    def release(self) -> None:
        """Free PARDISO's memory of this handle (its analysis and factor)."""
        if self.analysed:
            empty = np.zeros(1)
            self._call(-1, empty, empty, empty)
            self.analysed = False


#: Handles kept per thread (one per grid size); the least recently used one beyond is released.
MAX_HANDLES = 4
_local = threading.local()
_COLUMN_MAJOR = 102


def banded_cholesky_solve(band: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The solution (n, k) of the SPD system given by its upper band in LAPACK's storage (``band``
    (kd + 1, n), ``band[kd + i - j, j] = A[i, j]``) and ``b`` (n, k), by ``LAPACKE_dpbsv``; both are
    overwritten when Fortran-ordered float64 (else copied first)."""
    band, b = np.asfortranarray(band, dtype=np.float64), np.asfortranarray(b, dtype=np.float64)
    (kd1, n), k = band.shape, b.shape[1]
    fn = _library().LAPACKE_dpbsv
    fn.restype = ctypes.c_int
    info = fn(ctypes.c_int(_COLUMN_MAJOR), ctypes.c_char(b"U"), ctypes.c_int(n), ctypes.c_int(kd1 - 1),
              ctypes.c_int(k), band.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(kd1),
              b.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(n))
    if info != 0:
        raise RuntimeError(f"LAPACKE_dpbsv failed with info {info} (n = {n}, kd = {kd1 - 1}): "
                           f"{'not positive definite' if info > 0 else 'a bad argument'}")
    return b


def solver(key: tuple, pattern: sp.csr_matrix) -> _Pardiso:
    """This thread's PARDISO handle for ``pattern`` (the upper triangle of a matrix in CSR), named by
    ``key`` (a grid's size); analysed on its first solve. A handle holds one analysis, so each
    thread keeps one per pattern."""
    handles = _local.__dict__.setdefault("handles", {})
    handle = handles.pop(key, None) or _Pardiso(pattern.indptr, pattern.indices)
    handles[key] = handle                                    # most recently used last
    while len(handles) > MAX_HANDLES:
        handles.pop(next(iter(handles))).release()
    return handle
