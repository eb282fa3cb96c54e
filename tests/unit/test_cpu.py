"""available_cpus: explicit limit, cgroup v2, cgroup v1, affinity; capped, rounded up, at least 1."""

from __future__ import annotations

import os

import pytest

from faceanalysis.runtime import cpu


@pytest.fixture
def many_cpus(monkeypatch):
    """Pretend the process may run on 8 CPUs, whatever this machine has."""
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    return 8


def v2(root, text):
    (root / "cpu.max").write_text(text + "\n")
    return root


def v1(root, quota, period=100000, sub="cpu"):
    directory = root / sub
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (directory / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


def test_explicit_limit_wins_over_cgroups(tmp_path, many_cpus):
    v2(tmp_path, "600000 100000")
    assert cpu.available_cpus(3, cgroup_root=tmp_path) == 3


def test_explicit_fractional_limit_rounds_up(tmp_path, many_cpus):
    assert cpu.available_cpus(1.5, cgroup_root=tmp_path) == 2
    assert cpu.available_cpus(0.25, cgroup_root=tmp_path) == 1


def test_explicit_limit_is_capped_at_affinity(tmp_path, many_cpus):
    assert cpu.available_cpus(64, cgroup_root=tmp_path) == 8


def test_cgroup_v2_quota(tmp_path, many_cpus):
    v2(tmp_path, "200000 100000")
    assert cpu.available_cpus(cgroup_root=tmp_path) == 2


def test_cgroup_v2_fractional_quota_rounds_up(tmp_path, many_cpus):
    v2(tmp_path, "150000 100000")
    assert cpu.available_cpus(cgroup_root=tmp_path) == 2
    v2(tmp_path, "10000 100000")  # 0.1 CPU still gets one thread
    assert cpu.available_cpus(cgroup_root=tmp_path) == 1


def test_cgroup_v2_quota_is_capped_at_affinity(tmp_path, many_cpus):
    v2(tmp_path, "3200000 100000")
    assert cpu.available_cpus(cgroup_root=tmp_path) == 8


def test_cgroup_v2_max_means_no_limit(tmp_path, many_cpus):
    v2(tmp_path, "max 100000")
    assert cpu.available_cpus(cgroup_root=tmp_path) == 8


def test_cgroup_v2_takes_precedence_over_v1(tmp_path, many_cpus):
    v2(tmp_path, "300000 100000")
    v1(tmp_path, 100000)
    assert cpu.available_cpus(cgroup_root=tmp_path) == 3


def test_cgroup_v1_quota(tmp_path, many_cpus):
    v1(tmp_path, 400000, 100000)
    assert cpu.available_cpus(cgroup_root=tmp_path) == 4


def test_cgroup_v1_fractional_quota_and_other_period(tmp_path, many_cpus):
    v1(tmp_path, 75000, 50000)  # 1.5 CPUs
    assert cpu.available_cpus(cgroup_root=tmp_path) == 2


@pytest.mark.parametrize("sub", ["cpu,cpuacct", "."])
def test_cgroup_v1_other_mount_points(tmp_path, many_cpus, sub):
    v1(tmp_path, 300000, sub=sub)
    assert cpu.available_cpus(cgroup_root=tmp_path) == 3


def test_cgroup_v1_minus_one_means_no_limit(tmp_path, many_cpus):
    v1(tmp_path, -1)
    assert cpu.available_cpus(cgroup_root=tmp_path) == 8


def test_cgroup_v1_quota_is_capped_at_affinity(tmp_path, many_cpus):
    v1(tmp_path, 1600000)
    assert cpu.available_cpus(cgroup_root=tmp_path) == 8


def test_no_cgroup_files_means_affinity(tmp_path, many_cpus):
    assert cpu.available_cpus(cgroup_root=tmp_path) == 8
    assert cpu.available_cpus(cgroup_root=tmp_path / "missing") == 8


def test_garbage_cgroup_files_mean_no_limit(tmp_path, many_cpus):
    v2(tmp_path, "what 100000")
    assert cpu.available_cpus(cgroup_root=tmp_path) == 8


def test_affinity_restricted_below_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    v2(tmp_path, "400000 100000")
    assert cpu.available_cpus(cgroup_root=tmp_path) == 2


def test_at_least_one(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(), raising=False)
    assert cpu.available_cpus(cgroup_root=tmp_path) == 1
    assert cpu.available_cpus(0.001, cgroup_root=tmp_path) == 1


def test_on_this_machine():
    n = cpu.available_cpus()
    assert isinstance(n, int)
    assert 1 <= n <= os.cpu_count()
