"""The client's option checks, array encoding and typed results, and the CLI's record writers and
summary: pure functions, no server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanalysis.cli import output
from faceanalysis.client import Analysis, AnalysisError, analysis_options, parse_actions, png_of
from faceanalysis.runtime import results
from faceanalysis.v1 import common_pb2


def result_with(*faces: common_pb2.Face) -> common_pb2.AnalysisResult:
    result = common_pb2.AnalysisResult(analysis_id="a" * 32, faces=faces)
    result.image.width, result.image.height, result.image.format = 640, 480, "JPEG"
    result.created_at.FromSeconds(1_700_000_000)
    return result


def full_face(x: int, gender: int, years: float, dominant: str) -> common_pb2.Face:
    scores = {e: 0.0 for e in output.EMOTIONS} | {dominant: 1.0}
    return common_pb2.Face(box=common_pb2.BoundingBox(x=x, y=2, width=30, height=40), detection_score=0.93,
                           landmarks=[common_pb2.Point(x=1.5, y=2.5)] * 68,
                           age=common_pb2.Age(years=years, low=years - 5, high=years + 5),
                           gender=common_pb2.GenderPrediction(label=gender, confidence=0.8),
                           emotion=common_pb2.EmotionPrediction(dominant=dominant, scores=scores))


def test_actions_take_deepface_names():
    assert parse_actions(None) == []
    assert parse_actions("emotion") == [common_pb2.ACTION_EMOTION]
    assert parse_actions(("Age", "gender", "age")) == [common_pb2.ACTION_AGE, common_pb2.ACTION_GENDER]
    with pytest.raises(ValueError, match="unknown action 'race': choose from landmarks, age, gender, emotion"):
        parse_actions(["age", "race"])
    with pytest.raises(ValueError, match="empty"):
        parse_actions([])


@pytest.mark.parametrize("option", [{"detection_threshold": 0}, {"detection_threshold": 1}, {"min_face": 0},
                                    {"min_face": 2.5}, {"min_face": True}])
def test_options_out_of_range_are_refused(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        analysis_options(**option)


def test_options_map_onto_the_proto():
    options = analysis_options(actions=["emotion"], detection_threshold=0.75, min_face=32, no_store=True)
    assert list(options.actions) == [common_pb2.ACTION_EMOTION]
    assert options.detection_threshold == 0.75 and options.min_face == 32 and options.no_store
    assert analysis_options() == common_pb2.AnalysisOptions()  # every default left to the server


def test_arrays_become_lossless_png_in_rgb_order():
    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(png_of(bgr))))
    assert decoded.shape == (5, 7, 3) and (decoded == bgr[..., ::-1]).all()
    bgra = np.dstack([bgr, np.full((5, 7), 9, np.uint8)])
    assert (np.asarray(Image.open(io.BytesIO(png_of(bgra)))) == bgra[..., [2, 1, 0, 3]]).all()
    grey = bgr[..., 0]
    assert (np.asarray(Image.open(io.BytesIO(png_of(grey[..., None])))) == grey).all()
    with pytest.raises(ValueError, match="uint8"):
        png_of(bgr.astype(np.int16))


def test_typed_results_leave_what_was_not_asked_for_none():
    bare = common_pb2.Face(box=common_pb2.BoundingBox(x=1, y=2, width=3, height=4), detection_score=0.9)
    bare.emotion.dominant = "happy"
    bare.emotion.scores["happy"] = 1.0
    analysis = Analysis.from_proto(result_with(bare, full_face(50, common_pb2.GENDER_WOMAN, 30, "sad")))
    first, second = analysis.faces
    assert first.age is None and first.gender is None and first.landmarks == [] and first.emotion.confidence == 1
    assert second.gender.label == "woman" and second.age.years == 30 and len(second.landmarks) == 68
    assert analysis.created_at.timestamp() == 1_700_000_000
    assert analysis.to_dict() == json.loads(results.to_json(analysis.proto))
    assert "age" not in analysis.to_dict()["faces"][0]


def test_records_and_summary():
    faces = [full_face(10, common_pb2.GENDER_MAN, 40, "happy"), full_face(90, common_pb2.GENDER_WOMAN, 20, "happy"),
             common_pb2.Face(box=common_pb2.BoundingBox(x=150, width=5, height=5), detection_score=0.95)]
    analysis = Analysis.from_proto(result_with(*faces))
    stream = io.StringIO()
    rows = output.CsvRows(stream, "face")
    rows.result(Path("a.jpg"), "a", analysis)
    rows.failure(Path("b.jpg"), AnalysisError("INVALID_ARGUMENT", "no"))  # per face: stderr only
    parsed = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [r["gender"] for r in parsed] == ["man", "woman", ""]
    assert parsed[0]["emotion"] == "happy" and parsed[0]["emotion_confidence"] == "1.0"
    assert parsed[2]["age"] == "" and parsed[2]["emotion_sad"] == "" and parsed[2]["x"] == "150"

    stream = io.StringIO()
    lines = output.JsonLines(stream, "image")
    lines.result(Path("a.jpg"), "a", analysis)
    lines.failure(Path("b.jpg"), AnalysisError("INVALID_ARGUMENT", "no"))
    first, second = map(json.loads, stream.getvalue().splitlines())
    assert first["file"] == "a.jpg" and len(first["faces"]) == 3
    assert second == {"file": "b.jpg", "error": {"code": "INVALID_ARGUMENT", "message": "no"}}

    tally = output.Tally()
    tally.add(analysis)
    tally.failed += 1
    assert tally.lines(2) == ["1 of 2 images analyzed, 3 faces, 1 failed", "genders: man 1, woman 1",
                              "emotions: happy 2", "ages: 20.0-40.0, median 30.0"]
    assert output.Tally().lines(0)[1:] == ["genders: n/a", "emotions: n/a", "ages: n/a"]
