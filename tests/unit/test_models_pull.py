"""`faceanalysis models pull` against local mirrors: a directory and an HTTP URL."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from faceanalysis import models
from faceanalysis.models import provenance, verify
from faceanalysis.models.pull import PullError, parse_sums, pull, pull_file, sha256_of
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


@pytest.fixture
def no_internet(monkeypatch):
    """Only localhost answers: the official URLs a refused mirror file falls back to fail at once
    (as they do on the machines these tests run on), and never download hundreds of MB."""
    real = urllib.request.urlopen

    def urlopen(url, *args, **kwargs):
        full = url if isinstance(url, str) else url.full_url
        if not full.startswith(("http://127.0.0.1", "file://")):
            raise urllib.error.URLError("no internet in this test")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_without_sums_the_manifest_hashes_verify_and_other_bytes_are_refused(tmp_path, no_internet):
    """A mirror with no SHA256SUMS: its stand-ins are verified by the manifest's variant hashes; a
    file that is neither official nor a known variant is refused (DeepFace's slots record no
    official sha256, so such bytes are unverified rather than a mismatch)."""
    mirror = copied_mirror(tmp_path, sums=False)
    target = tmp_path / "models"
    outcomes = pull(target, service="face-attributes", mirror_location=str(mirror), progress=False)
    assert {o.provenance.verified_by for o in outcomes} == {"manifest variant"}
    age = mirror / "age_model_weights.onnx"
    age.write_bytes(age.read_bytes() + b"\0")
    fresh = tmp_path / "fresh"
    with pytest.raises(PullError, match="refused: no hash can verify it") as err:
        pull(fresh, service="face-attributes", mirror_location=str(mirror), progress=False)
    assert "no known variant" in str(err.value) and sha256_of(age) in str(err.value)
    assert nothing_installed(fresh, "age_model_weights.onnx")


# Bytes in the age model's slot that no hash in the manifest knows: what DeepFace's official
# weights are to this manifest (it records no sha256 for them, only the stand-ins' as variants).
UNKNOWN_AGE = b"not a model any hash in the manifest knows: the official DeepFace age weights, say\n" * 512


def mirror_with_unknown_age(tmp_path: Path) -> Path:
    mirror = copied_mirror(tmp_path, sums=False)
    (mirror / "age_model_weights.onnx").write_bytes(UNKNOWN_AGE)
    return mirror


def test_unhashed_official_weights_are_refused_unless_unverified_files_are_allowed(tmp_path, no_internet, caplog):
    """DeepFace's slots record no official sha256 but list stand-in variants: bytes that are no
    variant (the real official file) are refused, saying how to allow them, and installed with a
    warning naming their sha256 when unverified files are allowed."""
    entry = models.manifest().get("age_model_weights.onnx")
    assert entry.sha256 is None and entry.variants  # the case this covers: the real manifest, not a patched one
    actual = hashlib.sha256(UNKNOWN_AGE).hexdigest()
    assert actual not in {h for f in models.manifest().files for h in f.known_hashes}
    mirror = mirror_with_unknown_age(tmp_path)
    target = tmp_path / "models"

    # (1) Not allowed: refused, saying why and what to do; nothing of it is left behind.
    with pytest.raises(PullError, match="refused: no hash can verify it") as err:
        pull(target, service="face-attributes", mirror_location=str(mirror), progress=False)
    message = str(err.value)
    assert "sha256 mismatch" not in message  # nothing contradicts a hash: it is unverifiable
    assert actual in message and entry.unverified_reason in message and "no known variant" in message
    for how in ("--allow-unverified", "FACEANALYSIS_ALLOW_UNVERIFIED_MODELS", "global.models.allowUnverified",
                "ALLOW_UNVERIFIED_MODELS=true"):
        assert how in message
    assert nothing_installed(target, "age_model_weights.onnx")
    assert (target / ".deepface" / "weights" / "gender_model_weights.onnx").is_file()  # the stand-ins came

    # (2) Allowed: installed, unverified, with the official weights' preprocessing and a warning naming its sha256.
    with caplog.at_level(logging.WARNING, logger="faceanalysis.models.pull"):
        outcomes = {o.name: o for o in pull(target, service="face-attributes", mirror_location=str(mirror),
                                             progress=False, allow_unverified=True)}
    age = outcomes["age_model_weights.onnx"]
    assert not age.skipped and not age.verified and age.provenance.verified_by is None
    assert sha256_of(entry.location(target)) == actual == age.sha256
    assert age.provenance.identity == models.UNKNOWN
    assert age.provenance.preprocessing == entry.preprocessing  # face_margin 0.0: the official weights'
    assert all(o.verified for n, o in outcomes.items() if n != entry.name)
    (warning,) = [r.getMessage() for r in caplog.records if "UNVERIFIED" in r.getMessage()]
    assert actual in warning and entry.name in warning and "installed" in warning
    assert provenance.read_record(target)[entry.path]["sha256"] == actual
    assert f"{actual}  {entry.path}" in (target / "SHA256SUMS").read_text()
    assert not list((target / ".deepface" / "weights").glob(".age*")), "no temporary file left behind"

    # Pulled again with unverified files allowed, it is kept (with the warning again).
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faceanalysis.models.pull"):
        again = {o.name: o for o in pull(target, service="face-attributes", mirror_location=str(mirror),
                                          progress=False, allow_unverified=True)}
    assert again[entry.name].skipped and not again[entry.name].verified
    assert any(actual in r.getMessage() and "kept" in r.getMessage() for r in caplog.records)
    # A pull that does not allow it keeps nothing it cannot verify: it fails, and says why.
    with pytest.raises(PullError, match="refused: no hash can verify it"):
        pull(target, service="face-attributes", mirror_location=str(mirror), progress=False)
    # With the mirror's SHA256SUMS listing them, the same bytes are verified.
    (mirror / "SHA256SUMS").write_text(f"{actual}  age_model_weights.onnx\n")
    outcomes = {o.name: o for o in pull(target, service="face-attributes", mirror_location=str(mirror),
                                        progress=False)}
    assert outcomes[entry.name].verified and outcomes[entry.name].provenance.verified_by == "mirror SHA256SUMS"


def test_the_cli_installs_unhashed_official_weights_with_a_warning_when_allowed(tmp_path):
    """What a docker bake (BAKE_MODELS=true ALLOW_UNVERIFIED_MODELS=true) and the chart's pull init
    container (global.models.allowUnverified) run: `models pull` with the variable set."""
    mirror = mirror_with_unknown_age(tmp_path)
    actual = hashlib.sha256(UNKNOWN_AGE).hexdigest()
    env = dict(os.environ, FACEANALYSIS_ALLOW_UNVERIFIED_MODELS="true", FACEANALYSIS_MODEL_MIRROR=str(mirror))
    proc = faceanalysis("models", "pull", "--only", "face-attributes", "--dir", str(tmp_path / "m"), "--quiet",
                        env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"sha256 UNVERIFIED (allowed): {actual}" in proc.stdout
    assert any("UNVERIFIED" in line and actual in line for line in proc.stderr.splitlines()), proc.stderr


def test_allowing_unverified_files_never_overrides_a_recorded_official_sha256(tmp_path, no_internet):
    """YuNet's slot records the official file's sha256: other bytes are tampering, refused with
    unverified files allowed too, and leave nothing behind."""
    entry = models.manifest().get("face_detection_yunet_2023mar.onnx")
    assert entry.sha256
    mirror = copied_mirror(tmp_path, sums=False)
    (mirror / entry.name).write_bytes(b"not YuNet" * 1000)
    target = tmp_path / "models"
    with pytest.raises(PullError, match="sha256 mismatch") as err:
        pull(target, service="face-landmark", mirror_location=str(mirror), progress=False, allow_unverified=True)
    assert entry.name in str(err.value) and entry.sha256 in str(err.value)
    assert not entry.location(target).exists() and not list(target.glob(f".{entry.name}*"))
    assert entry.path not in provenance.read_record(target)
    assert entry.path not in parse_sums((target / "SHA256SUMS").read_text())

    # Nor is such a file kept because a record says it was once installed unverified.
    entry.location(target).write_bytes(b"not YuNet" * 1000)
    provenance.update_record(target, [provenance.identify(entry, entry.path, sha256_of(entry.location(target)),
                                                          verified_by=None, source="somewhere")])
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull(target, service="face-landmark", mirror_location=str(mirror), progress=False, allow_unverified=True)
    # verify calls it a mismatch, allowed or not.
    for allow in (False, True):
        (check,) = [c for c in verify.verify(target, service="face-landmark", allow_unverified=allow)
                    if c.path == entry.path]
        assert check.status == verify.MISMATCH and not check.ok


def test_a_slot_no_hash_at_all_could_verify_is_refused_before_downloading(tmp_path):
    """An entry with neither an official sha256 nor variants: nothing could vouch for any bytes, so
    without --allow-unverified nothing is fetched at all."""
    entry = replace(models.manifest().get("age_model_weights.onnx"), sha256=None, variants=(),
                    unverified_reason="test: no hash known", urls=("http://127.0.0.1:9/never-fetched.onnx",))
    with pytest.raises(PullError, match="refused: no hash can verify it") as err:
        pull_file(entry, tmp_path, None, progress=False)
    assert "test: no hash known" in str(err.value) and "never-fetched" not in str(err.value)
    assert "--allow-unverified" in str(err.value)
    assert not entry.location(tmp_path).parent.exists()


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
    # Not pulled at all (a copied file no record vouches for) and not a known file, in a slot whose
    # official sha256 the manifest records: a mismatch, unverified files allowed or not.
    bare = tmp_path / "bare"
    bare.mkdir()
    yunet = models.manifest().get("face_detection_yunet_2023mar.onnx")
    shutil.copyfile(MIRROR / "face_detection_yunet_2023mar_int8bq.onnx", yunet.location(bare))
    for allow in (False, True):
        (check,) = [c for c in verify.verify(bare, service="face-landmark", allow_unverified=allow)
                    if c.path == yunet.path]
        assert check.status == verify.MISMATCH and "neither the official file nor a known variant" in check.note
        assert not check.ok


def test_verify_reports_unhashed_official_weights_as_unverified(tmp_path, no_internet):
    """A file in a DeepFace slot that no hash verifies (the official weights, installed with
    unverified files allowed, or copied in): UNVERIFIED with its sha256, not MISMATCH; a problem
    (exit 1) unless unverified files are allowed (the flag, or the variable the chart's
    global.models.allowUnverified sets on the verify init container)."""
    entry = models.manifest().get("age_model_weights.onnx")
    actual = hashlib.sha256(UNKNOWN_AGE).hexdigest()
    pulled = tmp_path / "pulled"
    pull(pulled, service="face-attributes", mirror_location=str(mirror_with_unknown_age(tmp_path)), progress=False,
         allow_unverified=True)
    copied = tmp_path / "copied"  # a pre-filled volume: files and no record
    entry.location(copied).parent.mkdir(parents=True)
    for name in ("gender_model_weights.onnx", "facial_expression_model_weights.onnx"):
        shutil.copyfile(MIRROR / name, copied / ".deepface" / "weights" / name)
    entry.location(copied).write_bytes(UNKNOWN_AGE)
    for models_dir in (pulled, copied):
        for allow in (False, True):
            checks = {c.path: c for c in verify.verify(models_dir, service="face-attributes", allow_unverified=allow)}
            check = checks[entry.path]
            assert check.status == verify.UNVERIFIED, (models_dir, check)
            assert check.sha256 == actual and check.verified_by is None and check.ok is allow
            assert entry.unverified_reason in check.note and actual in check.note
            assert check.preprocessing == entry.preprocessing  # the official weights'
            assert all(c.ok and c.status == verify.OK for p, c in checks.items() if p != entry.path)
            text = verify.report(list(checks.values()))
            assert f"UNVERIFIED {entry.path}" in text and f"sha256: {actual}" in text
            assert ("3 of 3 file(s) ok (1 of them UNVERIFIED, allowed)" if allow
                    else "2 of 3 file(s) ok; 1 problem(s)") in text

        # The command's exit status: 1 unless unverified files are allowed, by the flag or the variable.
        args = ("models", "verify", "--dir", str(models_dir), "--only", "face-attributes")
        env = {k: v for k, v in os.environ.items() if k != "FACEANALYSIS_ALLOW_UNVERIFIED_MODELS"}
        proc = faceanalysis(*args, env=env)
        assert proc.returncode == 1 and f"UNVERIFIED {entry.path}" in proc.stdout and actual in proc.stdout
        assert "--allow-unverified" in proc.stdout and "MISMATCH" not in proc.stdout
        proc = faceanalysis(*args, "--allow-unverified", env=env)
        assert proc.returncode == 0, proc.stdout
        assert f"UNVERIFIED {entry.path}" in proc.stdout and actual in proc.stdout
        proc = faceanalysis(*args, env=dict(env, FACEANALYSIS_ALLOW_UNVERIFIED_MODELS="true"))
        assert proc.returncode == 0 and f"UNVERIFIED {entry.path}" in proc.stdout, proc.stdout


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
