"""`make run` as a user runs it on a fresh clone: no IMAGES argument (the sample photos in data/),
no FACEANALYSIS_FACE_MARGIN. The first run pulls the models from the mirror; a later run without
the mirror variable keeps what was pulled (models/models.lock.json) and gives the same answers,
each model at its own margin."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import MIRROR, ROOT

# data/SOURCES.md: faces, left to right, with their genders.
SAMPLES = {
    "obama": ["GENDER_MAN"],
    "biden": ["GENDER_MAN"],
    "two_people": ["GENDER_MAN", "GENDER_MAN"],
    "astronaut": ["GENDER_WOMAN"],
}


def make_run(tmp: Path, name: str, mirror: bool) -> dict[str, dict]:
    """`make run` with its own results, pictures, Redis and archive under tmp/name (so nothing is
    answered from an earlier run's cache) and the models in tmp/models."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FACEANALYSIS_MODEL_MIRROR", "FACEANALYSIS_FACE_MARGIN", "IMAGES", "MAKEFLAGS")}
    env.update(FACEANALYSIS_MODELS_DIR=str(tmp / "models"), FACEANALYSIS_ARCHIVE_DIR=str(tmp / name / "archive"))
    if mirror:
        env["FACEANALYSIS_MODEL_MIRROR"] = str(MIRROR)
    out = tmp / name
    flags = f"--out {out / 'results'} --pictures {out / 'pictures'} --workdir {out / 'stack'} --random-ports"
    proc = subprocess.run(["make", "--no-print-directory", "run", f"RUN_FLAGS={flags}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pictures = {p.stem for p in (out / "pictures").iterdir()}
    assert pictures == set(SAMPLES), pictures
    return {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("make-run")
    with_mirror = make_run(tmp, "first", mirror=True)
    without_mirror = make_run(tmp, "later", mirror=False)
    return with_mirror, without_mirror


def test_make_run_analyzes_the_sample_photos(runs):
    first, _ = runs
    assert set(first) == set(SAMPLES)
    for stem, genders in SAMPLES.items():
        faces = sorted(first[stem]["faces"], key=lambda f: f["box"]["x"])
        assert [f["gender"]["label"] for f in faces] == genders, stem
        assert all(len(f["landmarks"]) == 68 for f in faces), stem
    for smiling in ("obama", "astronaut"):
        (face,) = first[smiling]["faces"]
        assert face["emotion"]["dominant"] == "happy", smiling


def test_each_model_runs_at_its_own_margin(runs):
    for result in runs[0].values():
        margins = {m["task"]: m["parameters"]["face_margin"] for m in result["models"] if m["task"] in
                   ("age", "gender", "emotion")}
        assert margins == {"age": "0.4", "gender": "0.4", "emotion": "0.4"}  # the stand-ins' own, not a flag's


def test_a_later_run_without_the_mirror_gives_the_same_answers(runs):
    first, later = runs
    assert set(later) == set(first)
    for stem in first:
        a, b = first[stem], later[stem]
        assert not b.get("cached", False), "the later run must compute its answers, not read them from a cache"
        assert a["models"] == b["models"], stem
        assert len(a["faces"]) == len(b["faces"]), stem
        for fa, fb in zip(a["faces"], b["faces"]):
            assert fa["box"] == fb["box"], stem
            assert fa["gender"]["label"] == fb["gender"]["label"], stem
            assert fa["emotion"]["dominant"] == fb["emotion"]["dominant"], stem
            assert abs(fa["age"]["years"] - fb["age"]["years"]) < 0.01, stem
