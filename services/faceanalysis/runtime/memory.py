"""Keeping a service's resident memory flat under a long mixed load.

glibc gives each thread that allocates under contention its own arena (up to 8 per core) and
keeps freed memory in them. With a pool of worker threads decoding images of every size, RSS
then creeps up for hours from fragmentation alone, towards the pod's limit. So:
- `limit_arenas` caps the arenas at start-up (what MALLOC_ARENA_MAX does, set from code so every
  way of starting a service gets it);
- `release` asks glibc to return free pages to the OS after work big enough to matter.
Both are no-ops where glibc is absent (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# Below this, trimming costs more than it returns.
TRIM_ABOVE_BYTES = 4 * 1024 * 1024
ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


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


def release(work_bytes: int = TRIM_ABOVE_BYTES) -> None:
    """Return free heap pages to the OS after work that touched `work_bytes` of memory."""
    if _glibc is not None and work_bytes >= TRIM_ABOVE_BYTES:
        _glibc.malloc_trim(0)
