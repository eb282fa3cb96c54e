"""The faceanalysis command as users run it."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
import redis

from faceanalysis.cli.stack import LocalStack
from faceanalysis.v1 import image_input_pb2, image_input_pb2_grpc
from tests.support import MIRROR, distinct_photos, image

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
                       extra_env={"image-input": {"FACEANALYSIS_MAX_CONNECTION_AGE_SECONDS": str(age),
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
    env = dict(os.environ, FACEANALYSIS_MODELS_DIR=str(models_dir),
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
        assert "API keys: off for the local stack" in output
    finally:
        if up.poll() is None:
            up.kill()
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True)
    assert leftover.stdout == ""
    assert service_processes() <= before


# --- the retry loop of `analyze`, against a scripted image-input ----------------------------------

class ScriptedImageInput(image_input_pb2_grpc.FaceAnalysisServicer):
    """A real gRPC server that misbehaves on purpose: every stream is cut with UNAVAILABLE after
    a few answers (with requests still unanswered), some first tries get a busy answer, and one
    image is refused. It records what it received and answered."""

    def __init__(self, cut_every: int = 5, busy_first=(), refuse=(), always_busy: bool = False):
        self.cut_every, self.busy_first, self.refuse = cut_every, set(busy_first), set(refuse)
        self.always_busy = always_busy
        self.lock = threading.Lock()
        self.received: dict[str, int] = {}
        self.results: dict[str, int] = {}  # results sent per image
        self.max_unanswered = 0

    def AnalyzeImages(self, request_iterator, context):
        pending: queue.Queue = queue.Queue()
        counts = {"received": 0, "answered": 0}

        def read():
            try:
                for request in request_iterator:
                    with self.lock:
                        counts["received"] += 1
                        self.max_unanswered = max(self.max_unanswered, counts["received"] - counts["answered"])
                        self.received[request.client_ref] = self.received.get(request.client_ref, 0) + 1
                    pending.put(request)
            except grpc.RpcError:
                pass  # the stream was cut
            pending.put(None)  # the client half-closed: answer what is left, then end the stream

        threading.Thread(target=read, daemon=True).start()
        index = 0
        while True:
            request = pending.get()
            if request is None:
                return
            time.sleep(0.01)  # let the client send ahead, as a real server's work would
            ref = request.client_ref
            reply = image_input_pb2.AnalyzeImagesResponse(index=index, client_ref=ref)
            with self.lock:
                if self.always_busy or (ref in self.busy_first and self.received[ref] == 1):
                    reply.error.code, reply.error.message = "RESOURCE_EXHAUSTED", "image-input is at capacity"
                    reply.error.retryable = True
                elif ref in self.refuse:
                    reply.error.code, reply.error.message = "INVALID_ARGUMENT", "not a recognised image"
                else:
                    reply.result.analysis_id = f"{index:032x}"
                    reply.result.image.sha256 = hashlib.sha256(request.image).hexdigest()
                    self.results[ref] = self.results.get(ref, 0) + 1
                counts["answered"] += 1
            index += 1
            yield reply
            if index % self.cut_every == 0:
                time.sleep(0.05)  # the client has sent more by now: those are lost with the stream
                context.abort(grpc.StatusCode.UNAVAILABLE, "max connection age")


@pytest.fixture
def scripted():
    servers = []

    def start(servicer: ScriptedImageInput) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        image_input_pb2_grpc.add_FaceAnalysisServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_analyze_resends_only_what_a_broken_stream_left_unanswered(scripted, tmp_path, capsys):
    from faceanalysis.cli import analyze as cli

    files = distinct_photos(tmp_path / "in", 40, longest_side=64)
    refs = [f.stem for f in files]
    servicer = ScriptedImageInput(cut_every=5, busy_first=refs[::3], refuse=[refs[7]])
    code = cli.analyze([str(tmp_path / "in")], scripted(servicer), tmp_path / "out", None, 3, retry_seconds=30)
    out, err = capsys.readouterr()
    assert code == 1  # one image refused: a final failure, listed
    assert "39 of 40 images analyzed" in out
    assert f"{refs[7]}.jpg: INVALID_ARGUMENT: not a recognised image" in err
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.json")) == sorted(set(refs) - {refs[7]})
    # Every image got exactly one result; none was sent again once it had one.
    assert servicer.results == {ref: 1 for ref in refs if ref != refs[7]}
    assert servicer.max_unanswered <= cli.WINDOW
    resent = {ref: n for ref, n in servicer.received.items() if n > 1}
    assert set(refs[::3]) - {refs[7]} <= set(resent)  # busy answers were tried again
    assert "max connection age" not in err  # a broken stream is not a failure to report


def test_analyze_gives_up_when_nothing_is_answered_for_retry_seconds(scripted, tmp_path, capsys):
    from faceanalysis.cli import analyze as cli

    distinct_photos(tmp_path / "in", 5, longest_side=64)
    target = scripted(ScriptedImageInput(always_busy=True, cut_every=10**6))
    started = time.monotonic()
    code = cli.analyze([str(tmp_path / "in")], target, tmp_path / "out", None, 2, retry_seconds=1.5)
    out, err = capsys.readouterr()
    assert code == 2
    assert 1.5 <= time.monotonic() - started < 10
    assert f"image-input at {target}: RESOURCE_EXHAUSTED: image-input is at capacity" in err
    assert "giving up with 5 of 5 images left" in err
    assert "0 of 5 images analyzed" in out
