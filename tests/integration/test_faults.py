"""A folder is analyzed to the end while a process of the stack is SIGKILLed and restarted.

Each case runs its own supervised stack (Redis and the four services as real processes on
random ports, `Supervisor` restarting whatever exits) and `faceanalysis analyze` as a real
subprocess over 200 distinct photos. Once about a fifth of them are answered, one process is
SIGKILLed. The supervisor brings it back within a second or two; the retries of image-input
(towards its peers) and of the CLI (towards image-input) must bridge the gap, so no image fails.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from faceanalysis.cli.stack import LocalStack, Supervisor
from faceanalysis.runtime import results

from tests.support import alive, distinct_photos

FA = [sys.executable, "-m", "faceanalysis.cli.main"]
COUNT = 200


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distinct-photos")
    distinct_photos(folder, COUNT)
    return folder


def supervised_stack(models_dir: Path, work: Path, extra: dict | None = None) -> LocalStack:
    env = {"*": {"FACEANALYSIS_LOG_LEVEL": "INFO"}}
    env.update(extra or {})
    return LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work, random_ports=True,
                      extra_env=env)


def pid_of(stack: LocalStack, name: str) -> int:
    return stack.redis.process.pid if name == "redis" else stack.processes[name].pid


def check_stored_results(out: Path, stack: LocalStack) -> tuple[int, int]:
    """Every result that says it was stored is in Redis and in the archive; returns (stored, not stored)."""
    client = redis.Redis.from_url(stack.redis.url)
    stored, not_stored, missing = 0, 0, []
    for path in sorted(out.glob("*.json")):
        result = json.loads(path.read_text())
        if not result.get("stored"):
            not_stored += 1
            continue
        stored += 1
        analysis_id = result["analysis_id"]
        assert results.valid_id(analysis_id), path
        if not client.exists(f"fa:result:{analysis_id}"):
            missing.append(f"{path.name}: fa:result:{analysis_id} is not in Redis")
        if not (stack.archive_dir / f"{analysis_id}.json").is_file():
            missing.append(f"{path.name}: {analysis_id}.json is not in the archive")
    client.close()
    assert not missing, "acknowledged results were lost:\n" + "\n".join(missing[:20])
    return stored, not_stored


@pytest.mark.parametrize("victim", ["face-landmark", "face-attributes", "data-storage", "redis"])
def test_analyze_completes_while_a_process_is_killed(victim, models_dir, photos, tmp_path):
    stack = supervised_stack(models_dir, tmp_path / "stack")
    notes = io.StringIO()
    out = tmp_path / "json"
    started = time.monotonic()
    with stack, Supervisor(stack, out=notes) as supervisor:
        victim_pid = pid_of(stack, victim)
        others = {n: pid_of(stack, n) for n in ("redis", *stack.processes) if n != victim}
        with open(tmp_path / "analyze.log", "w+") as log:
            proc = subprocess.Popen([*FA, "analyze", str(photos), "--target", stack.target("image-input"),
                                     "--out", str(out), "--concurrency", "4"],
                                    stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                killed_at = None
                while proc.poll() is None and time.monotonic() - started < 150:
                    if killed_at is None and len(list(out.glob("*.json"))) >= COUNT // 5:
                        os.kill(victim_pid, signal.SIGKILL)
                        killed_at = len(list(out.glob("*.json")))
                    time.sleep(0.02)
                proc.wait(timeout=5)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            log.seek(0)
            output = log.read()
        took = time.monotonic() - started
        assert killed_at is not None and killed_at < COUNT, f"the run ended before {victim} could be killed"
        assert proc.returncode == 0, f"analyze exited {proc.returncode} ({took:.0f} s):\n{output[-3000:]}"
        assert f"{COUNT} of {COUNT} images analyzed" in output
        assert len(list(out.glob("*.json"))) == COUNT

        # The supervisor restarted the victim (a new process) and nothing else.
        assert supervisor.restarts[victim] >= 1, notes.getvalue()
        assert pid_of(stack, victim) != victim_pid and not alive(victim_pid)
        assert f"{victim} exited (signal SIGKILL); restarting in 0.5 s (restart 1)" in notes.getvalue()
        assert {n: pid_of(stack, n) for n in others} == others, notes.getvalue()

        stored, not_stored = check_stored_results(out, stack)
        assert stored + not_stored == COUNT
    print(f"{victim}: killed after {killed_at} answers; {stored} stored, {not_stored} not stored; {took:.1f} s")
