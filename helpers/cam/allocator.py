"""glibc's allocator told to keep freed memory, so batched forwards do not page-fault their buffers afresh.

By default glibc serves large blocks with ``mmap`` and hands them back to the kernel when freed, so every
batched forward (ONNX Runtime without its arena, PyTorch's autograd) faults its activation buffers in again.
Measured on a 2-core AMD EPYC (AVX2, no AVX-512), Lite0 at batch 16, interleaved: the package's forward
12.5-13.1 ms per image by default against 7.6-8.4 ms with freed memory kept, the same as a bare ONNX Runtime
session with its own arena (7.5-8.3 ms). :func:`keep_freed_memory` does in the process what the Makefile's
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do from outside: once, at the first engine session,
and only where glibc is the allocator and neither variable is set (then the user's setting stands).
``XAI_MALLOC=default`` leaves the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

#: mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: The environment variables that already set the same, and the one that opts out.
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_")
OPT_OUT = "XAI_MALLOC"

_DONE: list[str] = []


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> str:
    """Keep freed memory in the process (no ``mmap`` for large blocks, no trimming); say what was done.

    Returns ``"kept"``, or why not: ``"opted out"``, ``"set by the environment"``, ``"not glibc"``. Runs
    its check once per process; later calls return the first answer."""
    if _DONE:
        return _DONE[0]
    if environ.get(OPT_OUT) == "default":
        answer = "opted out"
    elif any(v in environ for v in MALLOC_VARIABLES):
        answer = "set by the environment"
    else:
        answer = _mallopt()
    _DONE.append(answer)
    return answer


def _mallopt() -> str:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
    except (OSError, AttributeError, TypeError):
        return "not glibc"
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return "kept" if ok else "not glibc"
