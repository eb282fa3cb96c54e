"""`faceanalysis up` keeps the local stack running: whatever exits is restarted, alone, on its ports."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis

from faceanalysis.cli.stack import LocalStack, Supervisor, health_status
from faceanalysis.runtime import services
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc

from tests.support import alive, image

FA = [sys.executable, "-m", "faceanalysis.cli.main"]
SERVICES = list(services.START_ORDER)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout:g} s")


def read_state(path: Path) -> dict:
    return json.loads(path.read_text())


def analyze_obama(target: str, skip_cache: bool = True) -> common_pb2.AnalysisResult:
    with grpc.insecure_channel(target) as channel:
        request = image_input_pb2.AnalyzeImageRequest(image=image("face_recognition/obama.jpg").read_bytes(),
                                                      options=common_pb2.AnalysisOptions(skip_cache=skip_cache))
        return image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImage(request, timeout=60).result


def stored_soon(target: str, timeout: float = 15) -> common_pb2.AnalysisResult:
    """An analysis that data-storage acknowledged, once it is back on its feet."""
    deadline = time.monotonic() + timeout
    while True:
        result = analyze_obama(target)
        if result.stored or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_up_restarts_what_exits_and_stops_everything(models_dir, tmp_path):
    state_file, ready, work = tmp_path / "state.json", tmp_path / "ready", tmp_path / "work"
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(models_dir), FACEANALYSIS_ARCHIVE_DIR=str(tmp_path / "archive"))
    stdout, stderr = open(tmp_path / "up.out", "w"), open(tmp_path / "up.err", "w")
    up = subprocess.Popen([*FA, "up", "--random-ports", "--workdir", str(work), "--state-file", str(state_file),
                           "--ready-file", str(ready)], env=env, stdout=stdout, stderr=stderr)
    ever: set[int] = set()

    def state() -> dict:
        current = read_state(state_file)
        ever.update(entry["pid"] for entry in current.values() if entry.get("pid"))
        return current

    def messages() -> str:
        return (tmp_path / "up.err").read_text()

    try:
        wait_for(lambda: ready.exists() or up.poll() is not None, 180, "up became ready", 0.2)
        assert ready.exists(), f"up exited {up.returncode}: {messages()[-3000:]}"
        first = state()
        assert set(first) == {"redis", *SERVICES}
        assert all(alive(entry["pid"]) and entry["restarts"] == 0 for entry in first.values())
        target = first["image-input"]["target"]
        assert target == f"127.0.0.1:{first['image-input']['grpc_port']}"
        assert first["redis"]["url"] == f"redis://127.0.0.1:{first['redis']['port']}/0"
        before = stored_soon(target)
        assert before.stored and len(before.faces) == 1

        # A model service dies: it alone comes back, on its port, and serves again.
        landmark = first["face-landmark"]
        os.kill(landmark["pid"], signal.SIGKILL)
        killed = time.monotonic()
        second = wait_for(lambda: (s := state())["face-landmark"]["pid"] != landmark["pid"] and s, 5,
                          "face-landmark got a new PID")
        assert second["face-landmark"]["restarts"] == 1
        assert second["face-landmark"]["grpc_port"] == landmark["grpc_port"]
        assert "face-landmark exited (signal SIGKILL); restarting in 0.5 s (restart 1)" in messages()
        landmark_target = f"127.0.0.1:{landmark['grpc_port']}"
        wait_for(lambda: health_status(landmark_target, timeout=0.5) != "UNREACHABLE", 3,
                 "the restarted face-landmark was listening")
        listening = time.monotonic() - killed
        wait_for(lambda: health_status(landmark_target, timeout=1) == "SERVING", 60,
                 "the restarted face-landmark was SERVING", 0.2)
        result = analyze_obama(target)
        assert len(result.faces) == 1 and len(result.faces[0].landmarks) == 68
        assert {n: second[n]["pid"] for n in ("redis", *SERVICES) if n != "face-landmark"} == \
            {n: first[n]["pid"] for n in ("redis", *SERVICES) if n != "face-landmark"}
        assert listening < 3, f"face-landmark listened again only after {listening:.1f} s"

        # Redis dies: it comes back with its data (AOF); every service keeps running.
        old_redis = second["redis"]["pid"]
        os.kill(old_redis, signal.SIGKILL)
        third = wait_for(lambda: (s := state())["redis"]["pid"] != old_redis and s, 5, "redis got a new PID")
        assert third["redis"]["restarts"] == 1 and third["redis"]["port"] == first["redis"]["port"]
        assert "redis exited (signal SIGKILL); restarting in 0.5 s (restart 1)" in messages()
        client = redis.Redis.from_url(third["redis"]["url"])
        wait_for(lambda: _pings(client), 5, "the restarted redis answered PING")
        assert client.exists(f"fa:result:{before.analysis_id}"), "a result stored before the kill was lost"
        client.close()
        assert {n: third[n]["pid"] for n in SERVICES} == {n: second[n]["pid"] for n in SERVICES}
        assert all(alive(third[n]["pid"]) for n in SERVICES)
        after = stored_soon(target)
        assert after.stored, f"data-storage did not store after the Redis restart: {after.storage_error}"

        # SIGTERM: everything it ever started is stopped, and it exits 0.
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 0, messages()[-3000:]
    finally:
        if up.poll() is None:  # a failed assertion: still stop everything, by PID
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
                for pid in ever:
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
        stdout.close()
        stderr.close()
    assert "stopping" in (tmp_path / "up.out").read_text()
    assert len(ever) == 7  # 5 first, then one new face-landmark and one new redis
    left = [pid for pid in ever if alive(pid)]
    assert not left, f"processes outlived `faceanalysis up`: {left}"
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert leftover.stdout == ""


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


# --- the supervisor's policy, with stand-in processes (no models needed) -----------------------

def fake_stack(tmp_path: Path, commands: dict[str, str]) -> LocalStack:
    """A LocalStack whose 'services' are small Python programs; no Redis."""
    stack = LocalStack(models_dir=tmp_path, archive_dir=tmp_path / "archive", workdir=tmp_path, random_ports=True)
    for name, code in commands.items():
        stack.commands[name] = ([sys.executable, "-c", code], dict(os.environ))
        stack.restart_service(name)
    return stack


def test_supervisor_backs_off_and_resets_after_a_stable_run(tmp_path):
    flag = tmp_path / "crash"
    flag.touch()
    # Exits with 3 while the flag file exists, else runs until stopped.
    code = (f"import os, sys, time\nif os.path.exists({str(flag)!r}): sys.exit(3)\n"
            "time.sleep(600)")
    stack = fake_stack(tmp_path, {"crasher": code, "steady": "import time; time.sleep(600)"})
    notes = io.StringIO()
    supervisor = Supervisor(stack, out=notes, state_file=tmp_path / "state.json", initial_backoff=0.2,
                            max_backoff=0.8, stable_seconds=1.0)
    steady = stack.processes["steady"].pid
    try:
        supervisor.start()
        wait_for(lambda: supervisor.restarts["crasher"] >= 4, 10, "four restarts")
        lines = notes.getvalue().splitlines()
        assert lines[:4] == [
            "crasher exited (code 3); restarting in 0.2 s (restart 1)",
            "crasher exited (code 3); restarting in 0.4 s (restart 2)",
            "crasher exited (code 3); restarting in 0.8 s (restart 3)",
            "crasher exited (code 3); restarting in 0.8 s (restart 4)",  # capped
        ]
        flag.unlink()
        # It now stays up past `stable_seconds`: the next exit waits the initial backoff again.
        wait_for(lambda: _stayed_up(stack, "crasher", 1.3), 10, "crasher running again")
        assert read_state(tmp_path / "state.json")["crasher"]["pid"] == stack.processes["crasher"].pid
        count = supervisor.restarts["crasher"]
        stack.processes["crasher"].send_signal(signal.SIGKILL)
        wait_for(lambda: f"crasher exited (signal SIGKILL); restarting in 0.2 s (restart {count + 1})"
                 in notes.getvalue(), 5, "a restart after the initial backoff")
        wait_for(lambda: supervisor.restarts["crasher"] == count + 1, 5, "the restart")
        assert stack.processes["steady"].pid == steady
        state = read_state(tmp_path / "state.json")
        assert state["steady"] == {"pid": steady, "restarts": 0}
    finally:
        supervisor.stop()
        stack.stop()
    # Once stopped, nothing comes back.
    time.sleep(0.5)
    assert stack.processes == {}
    assert len(supervisor.pids) >= 7 and not any(alive(pid) for pid in supervisor.pids)


def _stayed_up(stack: LocalStack, name: str, seconds: float) -> bool:
    process = stack.processes[name]
    time.sleep(seconds)
    return process.poll() is None and stack.processes[name] is process


def test_supervisor_never_restarts_what_is_being_stopped(tmp_path):
    stack = fake_stack(tmp_path, {"a": "import time; time.sleep(600)", "b": "import time; time.sleep(600)"})
    notes = io.StringIO()
    with Supervisor(stack, out=notes, initial_backoff=0.05) as supervisor:
        stack.stop_service("a", grace=5)  # taken out of the stack on purpose: not restarted
        time.sleep(0.5)
        assert "a" not in stack.processes and supervisor.restarts["a"] == 0
        supervisor.halt()  # what `up` does on SIGTERM before it stops the processes
        stack.processes["b"].send_signal(signal.SIGTERM)
        stack.processes["b"].wait()
        time.sleep(0.5)
        assert supervisor.restarts["b"] == 0
    assert notes.getvalue() == ""
    stack.stop()
    assert not any(alive(pid) for pid in supervisor.pids)


@pytest.mark.parametrize("returncode,text", [(-9, "signal SIGKILL"), (-15, "signal SIGTERM"), (1, "code 1"),
                                             (0, "code 0")])
def test_exit_descriptions(returncode, text):
    from faceanalysis.cli.stack import describe_exit

    assert describe_exit(returncode) == text
