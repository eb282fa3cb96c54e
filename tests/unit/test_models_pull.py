"""`faceanalysis models pull` against local mirrors: a directory and an HTTP URL."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading

import pytest

from faceanalysis import models
from faceanalysis.models.pull import PullError, parse_sums, pull, sha256_of
from tests.support import MIRROR


@pytest.fixture
def http_mirror():
    """The shared mirror served over real HTTP on a random localhost port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(MIRROR))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pull_from_url_mirror_verifies_with_mirror_sums(tmp_path, http_mirror):
    outcomes = pull(tmp_path, mirror_location=http_mirror, progress=False)
    assert {o.name for o in outcomes} == {f.name for f in models.manifest().files}
    assert all(o.verified for o in outcomes)
    sums = parse_sums((MIRROR / "SHA256SUMS").read_text())
    for entry in models.manifest().files:
        path = entry.location(tmp_path)
        assert path.is_file()
        assert sha256_of(path) == sums.get(entry.name, entry.sha256)
    # DeepFace's files land where DeepFace looks: $DEEPFACE_HOME/.deepface/weights.
    assert (tmp_path / ".deepface" / "weights" / "age_model_weights.onnx").is_file()
    # The predictor is not in the mirror: it comes from the face_recognition_models package.
    predictor = [o for o in outcomes if o.name == "shape_predictor_68_face_landmarks.dat"][0]
    assert "face_recognition_models" in predictor.source
    # A second pull keeps what is there.
    assert all(o.skipped for o in pull(tmp_path, mirror_location=http_mirror, progress=False))


def test_pull_only_one_service(tmp_path):
    outcomes = pull(tmp_path, service="face-attributes", mirror_location=str(MIRROR), progress=False)
    assert sorted(o.name for o in outcomes) == ["age_model_weights.onnx", "facial_expression_model_weights.onnx",
                                                "gender_model_weights.onnx"]
    assert not (tmp_path / "face_detection_yunet_2023mar.onnx").exists()


def test_tampered_mirror_file_is_refused_and_nothing_installed(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR, mirror)
    target = mirror / "gender_model_weights.onnx"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    dest = tmp_path / "models"
    with pytest.raises(PullError) as err:
        pull(dest, service="face-attributes", mirror_location=str(mirror), progress=False)
    assert "gender_model_weights.onnx" in str(err.value) and "sha256 mismatch" in str(err.value)
    assert not (dest / ".deepface" / "weights" / "gender_model_weights.onnx").exists()
    assert not list((dest / ".deepface" / "weights").glob(".gender*")), "no temporary file left behind"


def test_corrupt_existing_file_is_replaced(tmp_path):
    pull(tmp_path, service="face-attributes", mirror_location=str(MIRROR), progress=False)
    path = tmp_path / ".deepface" / "weights" / "age_model_weights.onnx"
    path.write_bytes(b"garbage")
    outcome = [o for o in pull(tmp_path, service="face-attributes", mirror_location=str(MIRROR), progress=False)
               if o.name == "age_model_weights.onnx"][0]
    assert not outcome.skipped
    assert sha256_of(path) == parse_sums((MIRROR / "SHA256SUMS").read_text())["age_model_weights.onnx"]


def test_unreachable_sources_fail_clearly(tmp_path):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    # No internet here: the official URLs fail too, and the error lists every source tried.
    proc = subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", "models", "pull", "--only",
                           "face-attributes", "--dir", str(tmp_path / "m"), "--mirror", "http://127.0.0.1:9/nothing",
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "could not get age_model_weights.onnx" in proc.stderr
    assert "127.0.0.1:9" in proc.stderr


def test_mirror_that_is_not_a_directory(tmp_path):
    with pytest.raises(PullError, match="not a directory"):
        pull(tmp_path, mirror_location=str(tmp_path / "nope"), progress=False)
