"""The faceanalysis command as users run it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import statistics
import sys
import time
from collections import Counter

import pytest
import redis

from faceanalysis.cli.output import EMOTIONS
from faceanalysis.cli.stack import LocalStack
from faceanalysis.v1 import common_pb2, image_input_pb2
from tests.integration.scripted import ScriptedImageInput
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
    assert "genders: man " in proc.stdout and "ages: " in proc.stdout  # with json, the summary is on stdout
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


# --- --format jsonl and csv: records on stdout, the bar and the summary on stderr --------------------

BROKEN = b"\xff\xd8\xff\xe0 this is not a jpeg"
GENDER_NAMES = {"GENDER_MAN": "man", "GENDER_WOMAN": "woman"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Photos with 1, 6, 0 and 2 faces, and one file no decoder takes."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in ["face_recognition/obama.jpg", "misc/t1.jpg", "dlib/dogs.jpg", "deepface/couple.jpg"]:
        shutil.copy(image(name), folder)
    (folder / "broken.jpg").write_bytes(BROKEN)
    return folder


@pytest.fixture(scope="module")
def truth(api, mixed):
    """What the gRPC API itself answers for each good file: its genders, face by face."""
    answers = {}
    for path in sorted(mixed.iterdir()):
        if path.name != "broken.jpg":
            result = api.AnalyzeImage(image_input_pb2.AnalyzeImageRequest(image=path.read_bytes()), timeout=120).result
            answers[str(path)] = [common_pb2.Gender.Name(f.gender.label) for f in result.faces]
    return {file: [GENDER_NAMES[g] for g in genders] for file, genders in answers.items()}


def analyze_to_stdout(stack, folder, *flags, shell_pipe: str | None = None):
    command = [*FA, "analyze", str(folder), "--target", stack.target("image-input"), *flags]
    if shell_pipe:
        return subprocess.run(f"{shlex.join(command)} | {shell_pipe}", shell=True, capture_output=True, text=True,
                              timeout=300)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def summary_of(stderr: str) -> dict:
    """The numbers of the end-of-run summary."""
    head = re.search(r"(\d+) of (\d+) images analyzed, (\d+) faces, (\d+) failed", stderr)
    counts = {k: dict((name, int(n)) for name, n in re.findall(r"(\w+) (\d+)", v))
              for k, v in re.findall(r"^(genders|emotions): (.*)$", stderr, re.M)}
    ages = re.search(r"^ages: ([\d.]+)-([\d.]+), median ([\d.]+)$", stderr, re.M)
    return {"analyzed": int(head[1]), "total": int(head[2]), "faces": int(head[3]), "failed": int(head[4]),
            **counts, "ages": ages.groups()}


def test_analyze_jsonl_per_image_agrees_with_the_api_and_the_summary(local_stack, mixed, truth):
    proc = analyze_to_stdout(local_stack, mixed, "--format", "jsonl")
    assert proc.returncode == 1, proc.stderr  # broken.jpg
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # nothing but records on stdout
    by_file = {r["file"]: r for r in records}
    assert len(records) == len(by_file) == 5
    assert by_file.pop(str(mixed / "broken.jpg"))["error"]["code"] == "INVALID_ARGUMENT"
    assert {file: [GENDER_NAMES[f["gender"]["label"]] for f in r["faces"]] for file, r in by_file.items()} == truth
    assert all(set(r) >= {"analysis_id", "image", "faces", "models", "created_at"} for r in by_file.values())
    assert "analyzing" in proc.stderr and "broken.jpg: INVALID_ARGUMENT" in proc.stderr

    faces = [f for r in by_file.values() for f in r["faces"]]
    ages = sorted(f["age"]["years"] for f in faces)
    assert summary_of(proc.stderr) == {
        "analyzed": 4, "total": 5, "faces": len(faces), "failed": 1,
        "genders": dict(Counter(GENDER_NAMES[f["gender"]["label"]] for f in faces)),
        "emotions": dict(Counter(f["emotion"]["dominant"] for f in faces)),
        "ages": (f"{ages[0]:.1f}", f"{ages[-1]:.1f}", f"{statistics.median(ages):.1f}"),
    }


def test_analyze_jsonl_per_face_pipes_into_jq(local_stack, mixed, truth):
    assert shutil.which("jq"), "jq is not installed (.ci/apt-packages.txt lists it)"
    proc = analyze_to_stdout(local_stack, mixed, "--format", "jsonl", "--per", "face",
                             shell_pipe="jq -c '{file, face, gender: .gender.label}'")
    assert proc.returncode == 0, proc.stderr  # jq's status: it parsed every line
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    got: dict[str, list] = {file: [] for file in truth}
    for line in sorted(lines, key=lambda r: (r["file"], r["face"])):
        got[line["file"]].append(GENDER_NAMES[line["gender"]])
    assert got == truth  # one line per face, none for dogs.jpg (no face) or broken.jpg (stderr)


def test_analyze_csv_agrees_with_the_api(local_stack, mixed, truth):
    from faceanalysis.cli.output import FACE_COLUMNS, IMAGE_COLUMNS

    proc = analyze_to_stdout(local_stack, mixed, "--format", "csv")
    assert proc.returncode == 1
    reader = csv.DictReader(io.StringIO(proc.stdout, newline=""))
    rows = list(reader)
    assert tuple(reader.fieldnames) == FACE_COLUMNS
    got: dict[str, list] = {file: [] for file in truth}
    for row in sorted(rows, key=lambda r: (r["file"], int(r["face"]))):
        got[row["file"]].append(row["gender"])
        assert int(row["width"]) > 0 and 0 < float(row["detection_score"]) <= 1
        assert float(row["age_low"]) <= float(row["age"]) <= float(row["age_high"])
        scores = [float(row[f"emotion_{e}"]) for e in EMOTIONS]
        assert abs(sum(scores) - 1) < 1e-3 and float(row["emotion_confidence"]) == max(scores)
    assert got == truth
    assert summary_of(proc.stderr)["faces"] == len(rows) and "broken.jpg: INVALID_ARGUMENT" in proc.stderr

    proc = analyze_to_stdout(local_stack, mixed, "--format", "csv", "--per", "image")
    reader = csv.DictReader(io.StringIO(proc.stdout, newline=""))
    rows = {row["file"]: row for row in reader}
    assert tuple(reader.fieldnames) == IMAGE_COLUMNS
    assert rows.pop(str(mixed / "broken.jpg"))["error"].startswith("INVALID_ARGUMENT: ")
    assert {file: int(row["faces"]) for file, row in rows.items()} == {f: len(g) for f, g in truth.items()}
    assert all(row["error"] == "" and len(row["analysis_id"]) == 32 for row in rows.values())


def test_analyze_actions_flag_asks_for_less(local_stack, tmp_path):
    """Needs image-input to honour AnalysisOptions.actions (the server side of the options)."""
    shutil.copy(image("face_recognition/obama.jpg"), tmp_path)
    proc = analyze_to_stdout(local_stack, tmp_path, "--format", "jsonl", "--per", "face", "--actions", "emotion",
                             "--min-face", "40", "--detection-threshold", "0.8")
    assert proc.returncode == 0, proc.stderr
    [face] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "emotion" in face and "age" not in face and "gender" not in face and face["landmarks"] == []
    assert "genders: n/a" in proc.stderr and "ages: n/a" in proc.stderr
    proc = analyze_to_stdout(local_stack, tmp_path, "--format", "csv", "--actions", "age,landmarks")
    [row] = csv.DictReader(io.StringIO(proc.stdout, newline=""))
    assert row["age"] and row["gender"] == "" and row["emotion"] == "" and row["emotion_happy"] == ""


@pytest.mark.parametrize("flags,named", [
    (["--actions", "age,race"], "--actions"),
    (["--actions", ","], "--actions"),
    (["--detection-threshold", "1.5"], "--detection-threshold"),
    (["--detection-threshold", "high"], "--detection-threshold"),
    (["--min-face", "0"], "--min-face"),
    (["--min-face", "4.5"], "--min-face"),
    (["--format", "xml"], "--format"),
    (["--per", "face"], "--per"),  # json writes files
    (["--format", "csv", "--out", "x"], "--out"),  # csv writes to stdout
])
def test_analyze_refuses_bad_flags_naming_them(flags, named, capsys, tmp_path):
    from faceanalysis.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(tmp_path), "--target", "127.0.0.1:9", *flags])
    assert exit_.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err


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
