"""Giving memory back to the operating system after large images.

glibc keeps freed heap memory in its arenas (one per thread that allocated), so a pod that
decoded one 40 MP photo would otherwise keep its peak RSS for good, and the next burst would
stack on top of it. `release` asks glibc to return free pages after work that was big enough
to matter; it is a no-op where glibc is absent (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# Below this, trimming costs more than it returns.
TRIM_ABOVE_BYTES = 16 * 1024 * 1024


def _libc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_trim()


def release(work_bytes: int = TRIM_ABOVE_BYTES) -> None:
    """Return free heap pages to the OS after work that touched `work_bytes` of memory."""
    if _malloc_trim is not None and work_bytes >= TRIM_ABOVE_BYTES:
        _malloc_trim(0)
