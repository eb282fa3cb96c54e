"""How many CPUs this container may really use, for sizing thread pools.

`os.cpu_count()` is the node's core count; a pod limited to 2 CPUs on a 64-core node that
sizes its pools by it runs 64 threads that the CFS quota then throttles. So the order is:

1. an explicit limit (`FACEANALYSIS_CPU_LIMIT`, which the Helm chart fills from the downward
   API `limits.cpu`);
2. the cgroup v2 quota (`cpu.max`: "max 100000" is no limit, "200000 100000" is 2 CPUs);
3. the cgroup v1 quota (`cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of -1 is no limit);
4. the CPUs the process may run on (`os.sched_getaffinity`).

The answer never exceeds the CPUs the process may run on, fractional quotas round up
(1.5 CPUs → 2 threads) and it is at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
# Where cgroup v1 mounts the cpu controller, relative to the cgroup root (the root itself
# when a container sees only its own cpu hierarchy there).
_V1_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu", ".")


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (cpusets included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_v2_quota(root: str | os.PathLike = CGROUP_ROOT) -> float | None:
    """CPUs allowed by cgroup v2's `cpu.max`, or None when there is no limit or no such file."""
    text = _read(Path(root) / "cpu.max")
    if not text:
        return None
    parts = text.split()
    if parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cgroup_v1_quota(root: str | os.PathLike = CGROUP_ROOT) -> float | None:
    """CPUs allowed by cgroup v1's CFS quota, or None when there is no limit or no such files."""
    for sub in _V1_DIRS:
        directory = Path(root) / sub
        quota_text = _read(directory / "cpu.cfs_quota_us")
        period_text = _read(directory / "cpu.cfs_period_us")
        if quota_text is None or period_text is None:
            continue
        try:
            quota, period = int(quota_text), int(period_text)
        except ValueError:
            return None
        if quota <= 0 or period <= 0:  # -1: no limit
            return None
        return quota / period
    return None


def available_cpus(limit: float | None = None, cgroup_root: str | os.PathLike = CGROUP_ROOT) -> int:
    """The CPUs this container may use: the explicit `limit`, else the cgroup v2 quota, else the
    cgroup v1 quota, else the affinity count; capped at the affinity count, rounded up, at least 1."""
    allowed = affinity_cpus()
    quota = limit if limit is not None and limit > 0 else None
    if quota is None:
        quota = cgroup_v2_quota(cgroup_root)
    if quota is None:
        quota = cgroup_v1_quota(cgroup_root)
    if quota is None:
        return allowed
    return max(1, min(allowed, math.ceil(quota)))
