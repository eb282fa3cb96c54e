"""The Python client (faceanalysis.client) against the real local stack: typed results, images as
paths, bytes and numpy arrays, per-request options, analyze_many, and the README's example."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import time
from datetime import datetime, timezone
from itertools import islice

import cv2
import numpy as np
import pytest

from faceanalysis.client import AnalysisError, Client
from faceanalysis.client_types import Age, Analysis, Box, Emotion, Face, Gender
from faceanalysis.runtime import results
from tests.integration.scripted import ScriptedImageInput, image_ref
from tests.support import ROOT, distinct_photos, image

EMOTIONS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
CORRUPT = b"\xff\xd8\xff\xe0 this is not a jpeg"
# shared/images/README.md: faces per photo (None: test_obama_and_biden has a borderline third face,
# tests/integration/test_known_photos.py), and genders left to right where the stand-in models get
# them all right (t1's fourth face is their known miss).
COUNTS = {
    "face_recognition/obama.jpg": 1, "face_recognition/biden.jpg": 1, "face_recognition/two_people.jpg": 2,
    "face_recognition/test_obama_and_biden.jpg": None, "face_recognition/test_kit_with_rose.jpg": 2,
    "misc/astronaut.png": 1, "misc/t1.jpg": 6, "deepface/couple.jpg": 2, "dlib/dogs.jpg": 0,
}
GENDERS = {"face_recognition/obama.jpg": ["man"], "face_recognition/biden.jpg": ["man"],
           "face_recognition/test_kit_with_rose.jpg": ["woman", "man"], "misc/astronaut.png": ["woman"],
           "deepface/couple.jpg": ["woman", "man"]}

@pytest.fixture(scope="module")
def client(local_stack):
    with Client(local_stack.target("image-input"), timeout=120) as client:
        yield client


def genders(analysis: Analysis) -> list[str | None]:
    return [f.gender.label if f.gender else None for f in analysis.faces]


def test_path_bytes_and_array_give_the_same_faces(client):
    photo = image("deepface/couple.jpg")
    by_path = client.analyze(photo)
    by_str = client.analyze(str(photo))
    by_bytes = client.analyze(photo.read_bytes())
    assert genders(by_path) == ["woman", "man"]
    assert by_bytes.image.sha256 == by_path.image.sha256 == by_str.image.sha256  # the file's own bytes
    assert genders(by_bytes) == genders(by_str) == genders(by_path)

    bgr = cv2.imread(str(photo))  # as OpenCV and DeepFace hold a picture
    by_array = client.analyze(bgr)
    assert by_array.image.format == "PNG"
    assert (by_array.image.width, by_array.image.height) == (by_path.image.width, by_path.image.height)
    assert genders(by_array) == genders(by_path)

    # The array went as the very pixels OpenCV holds (BGR understood as BGR): OpenCV's own PNG of it
    # decodes to the same picture and gets the same answer, box for box and year for year.
    same_picture = client.analyze(cv2.imencode(".png", bgr)[1].tobytes())
    assert [f.box for f in same_picture.faces] == [f.box for f in by_array.faces]
    assert [f.age for f in same_picture.faces] == [f.age for f in by_array.faces]
    # BGRA with an opaque alpha is that picture too; a grey one still has both faces.
    bgra = client.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    assert [f.box for f in bgra.faces] == [f.box for f in by_array.faces]
    assert genders(bgra) == genders(by_array)
    grey = client.analyze(cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))
    assert len(grey.faces) == 2


def test_results_are_typed_and_lose_nothing(client):
    analysis = client.analyze(image("face_recognition/obama.jpg"))
    assert re.fullmatch(r"[0-9a-f]{32}", analysis.analysis_id)
    assert analysis.image.format == "JPEG" and analysis.image.width > 0 and len(analysis.image.sha256) == 64
    assert isinstance(analysis.created_at, datetime) and analysis.created_at.tzinfo == timezone.utc
    assert abs((datetime.now(timezone.utc) - analysis.created_at).total_seconds()) < 24 * 3600
    assert isinstance(analysis.cached, bool) and isinstance(analysis.stored, bool)
    assert {m.task for m in analysis.models} >= {"face_detection", "landmarks", "age", "gender", "emotion"}
    [face] = analysis.faces
    assert isinstance(face, Face) and isinstance(face.box, Box)
    assert all(isinstance(v, int) for v in dataclasses.astuple(face.box)) and face.box.width > 0
    assert 0 < face.detection_score <= 1
    assert len(face.landmarks) == 68 and all(isinstance(p, tuple) and len(p) == 2 for p in face.landmarks)
    assert isinstance(face.age, Age) and face.age.low <= face.age.years <= face.age.high
    assert isinstance(face.gender, Gender) and face.gender.label == "man" and 0.5 <= face.gender.confidence <= 1
    assert isinstance(face.emotion, Emotion) and set(face.emotion.scores) == EMOTIONS
    assert face.emotion.dominant == max(face.emotion.scores, key=face.emotion.scores.get)
    assert face.emotion.confidence == face.emotion.scores[face.emotion.dominant]
    assert abs(sum(face.emotion.scores.values()) - 1) < 1e-3

    # The proto is kept, and to_dict() is the JSON mapping the CLI and the HTTP API write.
    assert analysis.proto.analysis_id == analysis.analysis_id
    assert analysis.to_dict() == json.loads(results.to_json(analysis.proto))
    assert analysis.to_dict()["faces"][0]["gender"]["label"] == "GENDER_MAN"
    copy = analysis.to_proto()
    assert copy == analysis.proto and copy is not analysis.proto
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.analysis_id = "x"  # type: ignore[misc]


def test_actions_leave_what_was_not_asked_for_unset(client):
    """Needs image-input to honour AnalysisOptions.actions (the server side of the options)."""
    photo = image("face_recognition/obama.jpg")
    for actions in (["emotion"], "emotion"):
        analysis = client.analyze(photo, actions=actions)
        [face] = analysis.faces
        assert face.emotion is not None and face.emotion.dominant in EMOTIONS
        assert face.age is None and face.gender is None and face.landmarks == []
        assert face.box.width > 0 and face.detection_score > 0  # boxes always come
        assert {m.task for m in analysis.models}.isdisjoint({"age", "gender"})
        mapping = analysis.to_dict()["faces"][0]
        assert "emotion" in mapping and "age" not in mapping and "gender" not in mapping
    both = client.analyze(photo, actions=["age", "gender", "age"])
    assert both.faces[0].age is not None and both.faces[0].gender is not None and both.faces[0].emotion is None


def test_bad_options_and_images_are_value_errors_before_anything_is_sent(client):
    photo = image("face_recognition/obama.jpg")
    with pytest.raises(ValueError, match=r"unknown action 'race'.*age.*gender.*emotion"):
        client.analyze(photo, actions=["age", "race"])
    with pytest.raises(ValueError, match="actions is empty"):
        client.analyze(photo, actions=[])
    with pytest.raises(ValueError, match="detection_threshold"):
        client.analyze(photo, detection_threshold=1.5)
    with pytest.raises(ValueError, match="min_face"):
        client.analyze(photo, min_face=0)
    with pytest.raises(ValueError, match="uint8"):
        client.analyze(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="BGR"):
        client.analyze(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(TypeError):
        client.analyze(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown action"):  # at the call, not at the first item
        client.analyze_many([photo], actions="race")
    with pytest.raises(AnalysisError) as err:
        client.analyze(CORRUPT)
    assert err.value.code == "INVALID_ARGUMENT"


def test_analyze_many_answers_every_item_once_like_analyze(client):
    """~10 photos, a corrupt upload and an unusable item, concurrency 3: every item comes back once,
    failures as AnalysisError items, the rest as analyze() answers them; the iterable is drawn from
    lazily, never more than `concurrency` items ahead of what was handed back."""
    photos = [image(name) for name in COUNTS]
    items = [*photos, CORRUPT, "/no/such/photo.jpg"]
    concurrency, pulled = 3, []

    def lazily():
        for item in items:
            pulled.append(item)
            yield item

    seen = []
    for handed, (item, outcome) in enumerate(client.analyze_many(lazily(), concurrency=concurrency,
                                                                  skip_cache=True), start=1):
        assert len(pulled) <= handed + concurrency  # bounded: drawn only as room frees up
        seen.append((item, outcome))
    assert sorted(map(id, (item for item, _ in seen))) == sorted(map(id, items))  # each once, the very objects
    outcomes = {id(item): outcome for item, outcome in seen}
    assert outcomes[id(CORRUPT)].code == "INVALID_ARGUMENT"
    missing = outcomes[id(items[-1])]
    assert isinstance(missing, AnalysisError) and "no/such/photo.jpg" in missing.message
    for name, photo in zip(COUNTS, photos):
        many = outcomes[id(photo)]
        assert isinstance(many, Analysis), f"{name}: {many}"
        assert not many.cached  # skip_cache: analyzed again
        one = client.analyze(photo)
        assert len(many.faces) == len(one.faces), name
        assert COUNTS[name] is None or len(many.faces) == COUNTS[name], name
        assert genders(many) == genders(one), name
        assert name not in GENDERS or genders(many) == GENDERS[name], name


def test_analyze_many_stops_cleanly_when_the_caller_does(client, tmp_path):
    files = distinct_photos(tmp_path / "in", 12, longest_side=320)
    started = time.monotonic()
    outcomes = client.analyze_many(files, concurrency=2)
    first = next(outcomes)
    outcomes.close()  # what leaving a for loop early does
    assert first[0] in files and time.monotonic() - started < 60
    assert client.health() == "SERVING"  # the client is still usable
    assert len(client.analyze(files[-1]).faces) >= 0


def test_analyze_many_retries_busy_answers_and_broken_streams(scripted, tmp_path):
    """A scripted server that cuts every stream after 5 answers, says busy to a third of the images
    on their first try and refuses one: every image gets exactly one result, busy ones are sent
    again, and no more than `concurrency` are ever unanswered."""
    files = distinct_photos(tmp_path / "in", 20, longest_side=64)
    refs = {image_ref_of(f): f for f in files}
    busy, refused = list(refs)[::3], list(refs)[4]
    servicer = ScriptedImageInput(cut_every=5, busy_first=busy, refuse=[refused])
    with Client(scripted(servicer), timeout=30) as client:
        seen = list(client.analyze_many(files, concurrency=3))
    assert sorted(str(item) for item, _ in seen) == sorted(map(str, files))
    failed = {image_ref_of(item): outcome for item, outcome in seen if isinstance(outcome, AnalysisError)}
    assert list(failed) == [refused] and failed[refused].code == "INVALID_ARGUMENT"
    assert servicer.results == {ref: 1 for ref in refs if ref != refused}
    assert servicer.max_unanswered <= 3
    assert set(busy) - {refused} <= {ref for ref, n in servicer.received.items() if n > 1}


def image_ref_of(path) -> str:
    """The ScriptedImageInput's name for a file sent without a client_ref."""
    from faceanalysis.v1 import image_input_pb2

    return image_ref(image_input_pb2.AnalyzeImageRequest(image=path.read_bytes()))


def test_analyze_many_raises_when_nothing_answers():
    started = time.monotonic()
    with Client("127.0.0.1:9", timeout=2) as client:
        with pytest.raises(AnalysisError) as err:
            list(client.analyze_many([image("face_recognition/obama.jpg")]))
    assert err.value.code == "UNAVAILABLE" and "no image was answered for 2 s" in err.value.message
    assert time.monotonic() - started < 30


def test_get_list_and_delete(client):
    analysis = client.analyze(image("face_recognition/biden.jpg"), skip_cache=True)
    assert analysis.stored
    again = client.get(analysis.analysis_id)
    assert again.analysis_id == analysis.analysis_id and genders(again) == genders(analysis)
    listed = {s.analysis_id: s for s in islice(client.list(page_size=2), 1000)}  # pages of 2
    assert listed[analysis.analysis_id].face_count == 1
    assert listed[analysis.analysis_id].image_sha256 == analysis.image.sha256
    assert client.delete(analysis.analysis_id) is True
    with pytest.raises(AnalysisError) as err:
        client.get(analysis.analysis_id)
    assert err.value.code == "NOT_FOUND"


README_MARKER = "<!-- readme-client-example"


def readme_example() -> str:
    """The ```python block right after the marker in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(README_MARKER):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match and after.index("```python") < after.index("\n\n"), "the example must follow its marker"
    return match.group(1)


def test_readme_example_runs_as_written(local_stack, tmp_path, monkeypatch, capsys):
    shutil.copy(image("deepface/couple.jpg"), tmp_path / "photo.jpg")
    (tmp_path / "photos").mkdir()
    for name in ("face_recognition/obama.jpg", "misc/t1.jpg"):
        shutil.copy(image(name), tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(CORRUPT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEANALYSIS_TARGET", local_stack.target("image-input"))
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out.splitlines()
    assert sum(" man " in line or " woman " in line for line in out[:2]) == 2  # the couple, one line per face
    assert len(ast.literal_eval(out[2])) == 2  # the dominant emotions of the frame's faces
    rest = sorted(out[3:])
    assert len(rest) == 3
    assert rest[0].startswith("photos/broken.jpg failed: INVALID_ARGUMENT")
    assert rest[1].startswith("photos/obama.jpg 1 faces") and rest[2].startswith("photos/t1.jpg 6 faces")
