"""`faceanalysis models pull` against local mirrors: a directory and an HTTP URL."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from faceanalysis import models
from faceanalysis.models import provenance, verify
from faceanalysis.models.pull import PullError, parse_sums, pull, sha256_of
from tests.support import MIRROR


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """`directory` served over real HTTP on a random localhost port (a URL mirror)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_mirror():
    """The shared mirror served over real HTTP on a random localhost port."""
    with serve(MIRROR) as url:
        yield url


def copied_mirror(tmp_path: Path, sums: bool = True) -> Path:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in MIRROR.iterdir():
        if sums or f.name != "SHA256SUMS":
            shutil.copyfile(f, mirror / f.name)
    return mirror


def nothing_installed(models_dir: Path, name: str) -> bool:
    weights = models_dir / ".deepface" / "weights"
    return (not (weights / name).exists() and not list(weights.glob(f".{name}*"))
            and not any(p.endswith(name) for p in provenance.read_record(models_dir)))


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


def test_pull_from_url_mirror_reads_its_override_and_refuses_wrong_bytes(tmp_path):
    """Over HTTP as from a directory: the mirror's faceanalysis-models.json sets a margin, and a file
    whose bytes match no hash is refused and leaves nothing behind."""
    mirror = copied_mirror(tmp_path)
    (mirror / provenance.MIRROR_OVERRIDE_FILE).write_text(json.dumps({"files": {
        "facial_expression_model_weights.onnx": {"description": "emotion stand-in at 0.3",
                                                 "preprocessing": {"face_margin": 0.3}}}}))
    target = tmp_path / "models"
    with serve(mirror) as url:
        outcomes = {o.name: o for o in pull(target, service="face-attributes", mirror_location=url, progress=False)}
    emotion = outcomes["facial_expression_model_weights.onnx"]
    assert emotion.source.startswith("http://127.0.0.1:")
    assert emotion.provenance.preprocessing["face_margin"] == 0.3
    assert emotion.provenance.verified_by == "mirror SHA256SUMS"
    assert outcomes["age_model_weights.onnx"].provenance.preprocessing["face_margin"] == 0.4

    gender = mirror / "gender_model_weights.onnx"
    gender.write_bytes(gender.read_bytes()[:-4] + b"oops")
    fresh = tmp_path / "fresh"
    with serve(mirror) as url, pytest.raises(PullError, match="sha256 mismatch"):
        pull(fresh, service="face-attributes", mirror_location=url, progress=False)
    assert nothing_installed(fresh, "gender_model_weights.onnx")
    assert (fresh / ".deepface" / "weights" / "age_model_weights.onnx").is_file()  # the others came


def test_without_sums_the_manifest_hashes_verify_and_other_bytes_are_refused(tmp_path):
    """A mirror with no SHA256SUMS: its stand-ins are verified by the manifest's variant hashes; a
    file that is neither official nor a known variant is refused."""
    mirror = copied_mirror(tmp_path, sums=False)
    target = tmp_path / "models"
    outcomes = pull(target, service="face-attributes", mirror_location=str(mirror), progress=False)
    assert {o.provenance.verified_by for o in outcomes} == {"manifest variant"}
    age = mirror / "age_model_weights.onnx"
    age.write_bytes(age.read_bytes() + b"\0")
    fresh = tmp_path / "fresh"
    with pytest.raises(PullError, match="sha256 mismatch") as err:
        pull(fresh, service="face-attributes", mirror_location=str(mirror), progress=False)
    assert "known variants" in str(err.value)
    assert nothing_installed(fresh, "age_model_weights.onnx")


@pytest.fixture
def unhashed(monkeypatch):
    """The manifest as it would be if nothing were known about the age model's bytes."""
    age = replace(models.manifest().get("age_model_weights.onnx"), sha256=None, variants=(),
                  unverified_reason="test: no hash known")
    manifest = models.Manifest((age,))
    monkeypatch.setattr("faceanalysis.models.pull.manifest", lambda: manifest)
    monkeypatch.setattr("faceanalysis.models.manifest", lambda: manifest)
    return age


def test_a_file_no_hash_covers_is_refused_unless_allowed(tmp_path, unhashed):
    mirror = copied_mirror(tmp_path, sums=False)
    target = tmp_path / "models"
    with pytest.raises(PullError, match="refused: no hash can verify it") as err:
        pull(target, mirror_location=str(mirror), progress=False)
    assert "--allow-unverified" in str(err.value) and "test: no hash known" in str(err.value)
    assert nothing_installed(target, "age_model_weights.onnx")

    (outcome,) = pull(target, mirror_location=str(mirror), progress=False, allow_unverified=True)
    assert not outcome.verified and outcome.provenance.verified_by is None
    assert outcome.provenance.identity == models.UNKNOWN
    assert outcome.provenance.preprocessing["face_margin"] == 0.0  # the official weights' (nothing else known)
    assert provenance.read_record(target)[unhashed.path]["sha256"] == sha256_of(unhashed.location(target))
    # verify: unverified is a problem unless allowed.
    (check,) = verify.verify(target)
    assert check.status == verify.UNVERIFIED and "test: no hash known" in check.note
    (check,) = verify.verify(target, allow_unverified=True)
    assert check.ok
    # A pull that does not allow it keeps nothing it cannot verify: it fails, and says why.
    with pytest.raises(PullError, match="refused"):
        pull(target, mirror_location=str(mirror), progress=False)
    # With the mirror's SHA256SUMS the same bytes are verified.
    shutil.copyfile(MIRROR / "SHA256SUMS", mirror / "SHA256SUMS")
    (outcome,) = pull(target, mirror_location=str(mirror), progress=False)
    assert outcome.verified and outcome.provenance.verified_by == "mirror SHA256SUMS"


def faceanalysis(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_verify_says_what_each_file_is(models_dir, tmp_path):
    proc = faceanalysis("models", "verify", "--dir", str(models_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "5 of 5 file(s) ok" in out
    for entry in models.manifest().files:
        assert f"ok         {entry.path}" in out
        assert sha256_of(entry.location(models_dir)) in out
    assert "known variant: stand-in: SSR-Net" in out and "official file: dlib's 68-point" in out
    assert "face_margin=0.4" in out and "verified by: mirror SHA256SUMS" in out

    # A changed file, then a missing one: exit 1, saying which.
    broken = tmp_path / "models"
    shutil.copytree(models_dir, broken)
    age = broken / ".deepface" / "weights" / "age_model_weights.onnx"
    age.write_bytes(age.read_bytes() + b"\0")
    proc = faceanalysis("models", "verify", "--dir", str(broken), "--only", "face-attributes")
    assert proc.returncode == 1
    assert "MISMATCH   .deepface/weights/age_model_weights.onnx" in proc.stdout
    assert "changed since it was pulled" in proc.stdout and "2 of 3 file(s) ok; 1 problem(s)" in proc.stdout
    age.unlink()
    proc = faceanalysis("models", "verify", "--dir", str(broken), "--only", "face-attributes")
    assert proc.returncode == 1 and "MISSING    .deepface/weights/age_model_weights.onnx" in proc.stdout
    # Not pulled at all (a copied file no record vouches for) and not a known file: a mismatch too.
    bare = tmp_path / "bare"
    (bare / ".deepface" / "weights").mkdir(parents=True)
    shutil.copyfile(MIRROR / "gender_model_weights.onnx", bare / ".deepface" / "weights" / "age_model_weights.onnx")
    (check,) = [c for c in verify.verify(bare, service="face-attributes") if c.path.endswith("age_model_weights.onnx")]
    assert check.status == verify.MISMATCH and "neither the official file nor a known variant" in check.note


def test_cli_takes_allow_unverified_from_the_flag_and_the_environment(tmp_path):
    """--allow-unverified and FACEANALYSIS_ALLOW_UNVERIFIED_MODELS are accepted (every file here is
    verifiable, so both pulls succeed; the refusal itself is tested above)."""
    env = dict(os.environ, FACEANALYSIS_ALLOW_UNVERIFIED_MODELS="1")
    proc = faceanalysis("models", "pull", "--only", "face-attributes", "--dir", str(tmp_path / "m"), "--mirror",
                        str(MIRROR), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "sha256 ok: mirror SHA256SUMS" in proc.stdout and "face_margin=0.4" in proc.stdout
    proc = faceanalysis("models", "pull", "--only", "face-attributes", "--dir", str(tmp_path / "m"),
                        "--allow-unverified", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("kept") == 3


def test_a_later_pull_without_the_mirror_keeps_the_mirrors_files_and_their_preprocessing(tmp_path):
    """Pulled once from the mirror, the models stay as they are when the mirror variable is gone
    (`make run` without FACEANALYSIS_MODEL_MIRROR): the stand-ins are known by their hashes, so
    the pull keeps them and their margin, and does not try the internet."""
    pull(tmp_path, service="face-attributes", mirror_location=str(MIRROR), progress=False)
    before = provenance.read_record(tmp_path)
    again = pull(tmp_path, service="face-attributes", progress=False)
    assert all(o.skipped and o.verified for o in again)
    after = provenance.read_record(tmp_path)
    for path, entry in before.items():
        assert after[path]["sha256"] == entry["sha256"]
        assert after[path]["preprocessing"] == entry["preprocessing"] and entry["preprocessing"]["face_margin"] == 0.4
