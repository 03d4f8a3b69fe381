"""The memory allocator of a training process: keep large freed blocks for reuse (glibc).

A training step frees and re-allocates the same large tensors every step (weight
gradients with ``zero_grad(set_to_none=True)``, activations). glibc serves every
allocation above its mmap threshold (at most 32 MiB by default) with a fresh
``mmap`` and returns it with ``munmap``, so each step pays page faults and zeroing
for those tensors again. DALIP heads make this costly on a CPU: ``mbdc_paper``'s
square projections have 4324 x 4324 weights, whose gradients (75 MB each) were
re-faulted every step; ``benchmarks/results/train_step_cpu.md`` measures it.

`keep_freed_memory` raises glibc's mmap and trim thresholds (``mallopt``) so such
blocks come from the heap and stay there between steps. It changes the whole
process, so only process owners call it: the ``dalip`` command line and the
benchmark scripts. Importing dalip or building a model never does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Serve allocations below ``threshold_bytes`` from the heap and keep freed memory there (glibc).

    Returns whether the setting took effect (False on other C libraries and
    platforms, where nothing is changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = min(2 * threshold_bytes, 2**31 - 1)  # mallopt takes a C int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
