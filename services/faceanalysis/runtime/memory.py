"""Keeping a service's resident memory flat under a long mixed load.

glibc gives each thread that allocates under contention its own arena (up to 8 per core) and
keeps freed memory in them. With a pool of worker threads decoding images of every size, RSS
then creeps up for hours from fragmentation alone, towards the pod's limit. So:
- `limit_arenas` caps the arenas at start-up (what MALLOC_ARENA_MAX does, set from code so every
  way of starting a service gets it);
- `map_large_blocks` (face-attributes) fixes the size from which a block is its own mapping
  (MALLOC_MMAP_THRESHOLD_). glibc otherwise raises that threshold up to 32 MiB as large blocks
  are freed, after which activations and batches of faces are carved out of the heap by one
  thread and freed by another, and the heap fragments. Fixed at 4 MiB they go back to the OS when
  freed: with VGG-cost age and gender models, face-attributes' peak in `make bench-vgg` fell from
  1592 to 1382 MiB. It costs page faults on every large allocation: int8 at concurrency 16 went
  from 4.17 to 3.71 photos/s, and set for every service it cost the stand-in stack 20 % more CPU
  per photo. So only face-attributes uses it, and only while it serves an fp32 model with large
  weights (Predictor.large_fp32_weights), where the peak is what sizes the pod;
- `release` asks glibc to return free pages to the OS after work big enough to matter.
Both are no-ops where glibc is absent (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# Below this, trimming costs more than it returns.
TRIM_ABOVE_BYTES = 4 * 1024 * 1024
ARENAS = 2
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
_M_ARENA_MAX = -8  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_glibc = _libc()


def limit_arenas(arenas: int = ARENAS) -> None:
    """Cap glibc's malloc arenas; call before worker threads start."""
    if _glibc is not None:
        _glibc.mallopt(_M_ARENA_MAX, arenas)


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> None:
    """Blocks of `threshold` bytes or more are mapped and unmapped on their own (see above)."""
    if _glibc is not None:
        _glibc.mallopt(_M_MMAP_THRESHOLD, threshold)


def release(work_bytes: int = TRIM_ABOVE_BYTES) -> None:
    """Return free heap pages to the OS after work that touched `work_bytes` of memory."""
    if _glibc is not None and work_bytes >= TRIM_ABOVE_BYTES:
        _glibc.malloc_trim(0)
