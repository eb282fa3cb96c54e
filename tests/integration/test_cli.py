"""The faceanalysis command as users run it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import redis

from faceanalysis.cli.stack import LocalStack
from tests.integration.test_faults import distinct_photos
from tests.support import MIRROR, TEST_MARGIN, image

FA = [sys.executable, "-m", "faceanalysis.cli.main"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ["face_recognition/obama.jpg", "misc/t1.jpg", "dlib/dogs.jpg"]:
        shutil.copy(image(name), folder)
    # Same stem in a subfolder: gets its own JSON, never overwrites.
    (folder / "more").mkdir()
    shutil.copy(image("face_recognition/biden.jpg"), folder / "more" / "obama.jpg")
    return folder


def test_analyze_writes_json_per_image_and_pictures(local_stack, photos, tmp_path):
    out, pics = tmp_path / "json", tmp_path / "pics"
    proc = subprocess.run([*FA, "analyze", str(photos), "--target", local_stack.target("image-input"),
                           "--out", str(out), "--visualize", str(pics), "--concurrency", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "analyzing" in proc.stderr  # the progress bar
    assert "4 of 4 images analyzed" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["dogs.json", "obama-1.json", "obama.json", "t1.json"]
    assert len(json.loads((out / "t1.json").read_text())["faces"]) == 6
    face = json.loads((out / "obama.json").read_text())["faces"][0]
    assert set(face) >= {"box", "detection_score", "landmarks", "age", "gender", "emotion"}
    assert face["gender"]["label"] == "GENDER_MAN" and len(face["landmarks"]) == 68
    assert sorted(p.name for p in pics.iterdir()) == ["dogs.png", "obama-1.png", "obama.png", "t1.png"]

    redrawn = tmp_path / "redrawn"
    proc = subprocess.run([*FA, "visualize", str(out), str(photos), "--out", str(redrawn)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(list(redrawn.glob("*.png"))) == 4


def test_analyze_reports_unreachable_server(photos, tmp_path):
    started = time.monotonic()
    proc = subprocess.run([*FA, "analyze", str(photos), "--target", "127.0.0.1:9", "--out", str(tmp_path),
                           "--retry-seconds", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "image-input at 127.0.0.1:9: UNAVAILABLE" in proc.stderr
    assert "giving up with 4 of 4 images left" in proc.stderr
    assert "0 of 4 images analyzed" in proc.stdout
    assert 3 <= time.monotonic() - started < 30  # it kept trying for --retry-seconds, then stopped


def test_analyze_resumes_streams_cut_by_connection_age(models_dir, tmp_path):
    """image-input closes every connection after 2 s (1 s grace): streams break again and again.
    The run still answers every image once, and no image is analyzed twice."""
    count, age = 200, 2
    folder = tmp_path / "in"
    distinct_photos(folder, count)
    work = tmp_path / "stack"
    stack = LocalStack(models_dir=models_dir, archive_dir=work / "archive", workdir=work, random_ports=True,
                       extra_env={"*": {"FACEANALYSIS_FACE_MARGIN": TEST_MARGIN},
                                  "image-input": {"FACEANALYSIS_MAX_CONNECTION_AGE_SECONDS": str(age),
                                                  "FACEANALYSIS_MAX_CONNECTION_AGE_GRACE_SECONDS": "1"}})
    out = tmp_path / "json"
    with stack:
        started = time.monotonic()
        proc = subprocess.run([*FA, "analyze", str(folder), "--target", stack.target("image-input"),
                               "--out", str(out), "--concurrency", "2"], capture_output=True, text=True, timeout=300)
        took = time.monotonic() - started
        client = redis.Redis.from_url(stack.redis.url)
        in_redis = {key.decode().removeprefix("fa:result:") for key in client.scan_iter("fa:result:*")}
        client.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert took >= 3 * age, f"the run took {took:.1f} s: too short to cross several connection ages"
    assert f"{count} of {count} images analyzed" in proc.stdout
    jsons = sorted(out.glob("*.json"))
    assert len(jsons) == count
    ids = {json.loads(p.read_text())["analysis_id"] for p in jsons}
    archived = {p.stem for p in (work / "archive").glob("*.json")}
    assert len(ids) == count
    assert archived == ids, f"{len(archived - ids)} analyses archived that no answer names (analyzed twice)"
    assert in_redis == ids, f"{len(in_redis - ids)} analyses in Redis that no answer names (analyzed twice)"


def test_analyze_lists_refused_images(local_stack, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    shutil.copy(image("misc/astronaut.png"), folder)
    proc = subprocess.run([*FA, "analyze", str(folder), "--target", local_stack.target("image-input"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "broken.jpg: INVALID_ARGUMENT" in proc.stderr
    assert (tmp_path / "out" / "astronaut.json").is_file()


def test_health_command(local_stack):
    ok = subprocess.run([*FA, "health", "--target", local_stack.target("face-landmark"),
                         "--service", "faceanalysis.v1.FaceLandmark"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "SERVING"
    down = subprocess.run([*FA, "health", "--target", "127.0.0.1:9", "--timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and down.stdout.strip() == "UNREACHABLE"


def service_processes() -> set[str]:
    """PIDs of every `faceanalysis serve` process on the machine."""
    found = subprocess.run(["pgrep", "-f", "faceanalysis.cli.main serve"], capture_output=True, text=True)
    return set(found.stdout.split())


def test_run_is_the_whole_job_and_cleans_up(models_dir, photos, tmp_path):
    before = service_processes()
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(models_dir), FACEANALYSIS_FACE_MARGIN=TEST_MARGIN,
               FACEANALYSIS_ARCHIVE_DIR=str(tmp_path / "archive"), FACEANALYSIS_MODEL_MIRROR=str(MIRROR))
    proc = subprocess.run([*FA, "run", str(photos), "--out", str(tmp_path / "results"), "--pictures",
                           str(tmp_path / "output"), "--workdir", str(tmp_path / "work"), "--random-ports"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "results").glob("*.json"))) == 4
    assert len(list((tmp_path / "output").glob("*.png"))) == 4
    assert len(list((tmp_path / "archive").glob("*.json"))) == 4
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True)
    assert leftover.stdout == "", "redis outlived `faceanalysis run`"
    assert service_processes() <= before, "a service outlived `faceanalysis run`"


def test_up_stops_everything_on_sigterm(models_dir, tmp_path):
    before = service_processes()
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(models_dir), FACEANALYSIS_ARCHIVE_DIR=str(tmp_path / "a"))
    ready = tmp_path / "ready"
    up = subprocess.Popen([*FA, "up", "--random-ports", "--workdir", str(tmp_path / "work"),
                           "--ready-file", str(ready)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and time.monotonic() < deadline and up.poll() is None:
            time.sleep(0.3)
        assert ready.exists(), "up never became ready"
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=90)
        assert up.returncode == 0
        assert "image-input" in output and "grpc 127.0.0.1:" in output and "stopping" in output
    finally:
        if up.poll() is None:
            up.kill()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True)
    assert leftover.stdout == ""
    assert service_processes() <= before
