"""The allocator setting: kept once per process, the environment's own setting and the opt-out respected."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cam import allocator

ROOT = Path(__file__).resolve().parents[2]

# A fresh process: a 64 MB block is mmap-ed by default (glibc's mallinfo2 counts it in hblks), and lies in the
# heap once the setting is made.
PROBE = """
import ctypes, os, sys
from helpers.cam.allocator import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None); libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
def mmapped_after_malloc():
    base = libc.mallinfo2().hblks; p = libc.malloc(64 << 20); n = libc.mallinfo2().hblks - base
    libc.free(ctypes.c_void_p(p)); return n
before = mmapped_after_malloc()
answer = keep_freed_memory()
print(answer, before, mmapped_after_malloc())
"""


def _probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in (*allocator.MALLOC_VARIABLES, allocator.OPT_OUT)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         env={**clean, "PYTHONPATH": str(ROOT), **env}, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_stay_in_the_heap_once_kept():
    assert _probe() == ["kept", "1", "0"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_environment_and_the_opt_out_leave_the_allocator_alone():
    assert _probe(XAI_MALLOC="default") == ["opted", "out", "1", "1"]
    assert _probe(MALLOC_TRIM_THRESHOLD_="1000")[:4] == ["set", "by", "the", "environment"]


def test_the_answer_is_given_once_per_process(monkeypatch):
    monkeypatch.setattr(allocator, "_DONE", [])
    assert allocator.keep_freed_memory({"MALLOC_MMAP_THRESHOLD_": "1"}) == "set by the environment"
    assert allocator.keep_freed_memory({}) == "set by the environment"  # the first answer stands
