"""What the benchmark reads about processes and the machine: CPU seconds and peak RSS from
/proc, the CPU model and flags, and the versions of the libraries that decide the speed."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


# Distributions whose versions describe the run (the first one installed of each list).
VERSIONS = {"onnxruntime": ("onnxruntime",),
            "opencv": ("opencv-contrib-python-headless", "opencv-python-headless", "opencv-python"),
            "deepface": ("deepface",), "dlib": ("dlib-bin", "dlib"), "grpcio": ("grpcio",), "numpy": ("numpy",)}
# CPU features that decide how fast ONNX Runtime's fp32 and int8 kernels are.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _version(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine() -> dict:
    from faceanalysis.runtime import cpu

    info = {"cpu": "unknown", "cpu_flags": [], "logical_cpus": os.cpu_count(), "cpus_available": cpu.available_cpus()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and info["cpu"] == "unknown":
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["memory_gib"] = round(int(mem[1]) / MiB, 1)
        info["load_average_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    info["versions"] = {"python": sys.version.split()[0], **{k: _version(v) for k, v in VERSIONS.items()}}
    return info
