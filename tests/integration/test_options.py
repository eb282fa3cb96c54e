"""Per-request options through the real stack: actions pick the outputs and the models that run
(seen in face-attributes' own inference metrics), detection_threshold and min_face change which
faces are found, the options that change the answer change the cache key, and a bad option is
INVALID_ARGUMENT before anything is called or stored."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faceanalysis.v1 import common_pb2, image_input_pb2
from tests.support import image, unique_photo

A = common_pb2
GROUP = "misc/t1.jpg"  # 6 faces, YuNet scores 0.906-0.929
# Faces of different sizes: the shorter sides of their boxes are about 70, 99, 118 and 124 px.
SIZES = "deepface/selfie-many-people.jpg"
PORTRAIT = "face_recognition/obama.jpg"
AGE_GENDER = {"age", "gender"}


def analyze(api, data: bytes, **options) -> common_pb2.AnalysisResult:
    request = image_input_pb2.AnalyzeImageRequest(image=data, options=common_pb2.AnalysisOptions(**options))
    return api.AnalyzeImage(request, timeout=120).result


def photo(relative: str) -> bytes:
    return image(relative).read_bytes()


def scrape(url: str) -> dict[tuple, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("faceanalysis_")}


def analysis_work(samples: dict[tuple, float]) -> dict[tuple, float]:
    """The samples an analysis can move: all but those of other methods (DescribeModels, health)."""
    return {key: value for key, value in samples.items() if dict(key[1]).get("method", "PredictAttributes")
            == "PredictAttributes"}


def inferences(samples: dict[tuple, float], model: str) -> float:
    return samples.get(("faceanalysis_model_inference_duration_seconds_count", (("model", model),)), 0.0)


def shorter_side(face) -> int:
    return min(face.box.width, face.box.height)


def boxes(result) -> list[tuple[int, int, int, int]]:
    return [(f.box.x, f.box.y, f.box.width, f.box.height) for f in result.faces]


def iou(a, b) -> float:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    return inter / (aw * ah + bw * bh - inter)


def count_stored(api) -> int:
    total, token = 0, ""
    while True:
        page = api.ListAnalyses(image_input_pb2.ListAnalysesRequest(page_size=1000, page_token=token), timeout=30)
        total += len(page.analyses)
        if not (token := page.next_page_token):
            return total


# --- actions -----------------------------------------------------------------------------------


def test_emotion_only_runs_the_emotion_model_only(api, local_stack):
    url = local_stack.metrics_urls["face-attributes"]
    before = scrape(url)
    result = analyze(api, photo(PORTRAIT), actions=[A.ACTION_EMOTION], no_store=True)
    after = scrape(url)
    assert len(result.faces) == 1
    (face,) = result.faces
    assert face.HasField("emotion") and face.emotion.dominant == "happy"  # obama.jpg smiles
    assert not face.HasField("age") and not face.HasField("gender")
    assert len(face.landmarks) == 0
    assert face.box.width > 0 and face.detection_score > 0, "boxes and scores always come back"
    # The models that contributed, and no other.
    assert {m.name for m in result.models} == {"yunet", "dlib_68", "deepface_emotion"}
    assert inferences(after, "emotion") == inferences(before, "emotion") + 1
    for model in AGE_GENDER:
        assert inferences(after, model) == inferences(before, model), f"the {model} model ran"


def test_landmarks_only_never_calls_face_attributes(api, local_stack):
    url = local_stack.metrics_urls["face-attributes"]
    before = scrape(url)
    result = analyze(api, photo("face_recognition/two_people.jpg"), actions=[A.ACTION_LANDMARKS], no_store=True)
    after = scrape(url)
    assert len(result.faces) == 2
    for face in result.faces:
        assert len(face.landmarks) == 68
        assert not (face.HasField("age") or face.HasField("gender") or face.HasField("emotion"))
    assert {m.name for m in result.models} == {"yunet", "dlib_68"}
    assert {m.name for m in result.models if m.task in ("age", "gender", "emotion")} == set()
    assert analysis_work(after) == analysis_work(before), "face-attributes saw no call"


def test_age_and_gender_without_landmarks(api):
    result = analyze(api, photo("deepface/couple.jpg"), actions=[A.ACTION_GENDER, A.ACTION_AGE], no_store=True)
    assert [f.gender.label for f in result.faces] == [A.GENDER_WOMAN, A.GENDER_MAN]
    for face in result.faces:
        assert face.HasField("age") and 0 < face.age.years < 100
        assert not face.HasField("emotion") and len(face.landmarks) == 0
    assert {m.task for m in result.models} == {"face_detection", "landmarks", "age", "gender"}


# --- detection_threshold and min_face -------------------------------------------------------------


def test_a_high_detection_threshold_finds_fewer_faces(api):
    default = analyze(api, photo(GROUP), no_store=True)
    strict = analyze(api, photo(GROUP), detection_threshold=0.925, no_store=True)
    assert len(default.faces) == 6
    assert 0 < len(strict.faces) < len(default.faces)
    assert all(f.detection_score >= 0.925 - 1e-6 for f in strict.faces)
    (yunet,) = [m for m in strict.models if m.name == "yunet"]
    assert yunet.parameters["detection_threshold"] == "0.925", "the result names the threshold it ran with"


def test_a_large_min_face_drops_small_faces(api):
    default = analyze(api, photo(SIZES), no_store=True)
    sizes = sorted(shorter_side(f) for f in default.faces)
    assert sizes[0] < 90 <= sizes[-1], f"the photo has faces on both sides of 90 px: {sizes}"
    large = analyze(api, photo(SIZES), min_face=90, no_store=True)
    assert boxes(large) == [b for b, f in zip(boxes(default), default.faces) if shorter_side(f) >= 90]
    assert all(shorter_side(f) >= 90 for f in large.faces)
    (yunet,) = [m for m in large.models if m.name == "yunet"]
    assert yunet.parameters["min_face"] == "90"


def test_a_small_min_face_finds_what_the_default_finds(api):
    # On t1.jpg (1280 px) 20 px asks for a finer first pass (scale 0.7 instead of 0.5): same faces.
    default = analyze(api, photo(GROUP), no_store=True)
    small = analyze(api, photo(GROUP), min_face=20, no_store=True)
    assert len(small.faces) == len(default.faces)
    for a, b in zip(boxes(small), boxes(default)):
        assert iou(a, b) > 0.7, (a, b)


# --- the cache key -----------------------------------------------------------------------------


def test_options_that_change_the_answer_change_the_cache_key(api):
    data = unique_photo(PORTRAIT)
    emotion = analyze(api, data, actions=[A.ACTION_EMOTION])
    assert not emotion.cached and emotion.stored
    again = analyze(api, data, actions=[A.ACTION_EMOTION])
    assert again.cached and again.analysis_id == emotion.analysis_id
    assert not again.faces[0].HasField("age"), "the cached answer is the emotion-only one"

    two = analyze(api, data, actions=[A.ACTION_AGE, A.ACTION_EMOTION])
    assert not two.cached, "other actions miss"
    swapped = analyze(api, data, actions=[A.ACTION_EMOTION, A.ACTION_AGE, A.ACTION_EMOTION])
    assert swapped.cached and swapped.analysis_id == two.analysis_id, "actions are a set"

    everything = analyze(api, data)
    assert not everything.cached
    named = analyze(api, data, actions=[A.ACTION_LANDMARKS, A.ACTION_AGE, A.ACTION_GENDER, A.ACTION_EMOTION])
    assert named.cached and named.analysis_id == everything.analysis_id, "all four named is no action named"

    strict = analyze(api, data, actions=[A.ACTION_EMOTION], detection_threshold=0.95)
    assert not strict.cached, "another threshold misses"
    assert analyze(api, data, actions=[A.ACTION_EMOTION], detection_threshold=0.95).cached
    sized = analyze(api, data, actions=[A.ACTION_EMOTION], min_face=60)
    assert not sized.cached, "another min_face misses"
    assert analyze(api, data, actions=[A.ACTION_EMOTION], min_face=60).analysis_id == sized.analysis_id
    # skip_cache is not part of the key: it only skips the lookup.
    fresh = analyze(api, data, actions=[A.ACTION_EMOTION], skip_cache=True)
    assert not fresh.cached and fresh.analysis_id != emotion.analysis_id


# --- bad options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options,field", [
    (dict(actions=[A.ACTION_UNSPECIFIED]), "options.actions"),
    (dict(actions=[A.ACTION_AGE, 17]), "options.actions"),
    (dict(detection_threshold=1.0), "options.detection_threshold"),
    (dict(detection_threshold=-0.2), "options.detection_threshold"),
    (dict(detection_threshold=3.5), "options.detection_threshold"),
    (dict(min_face=-5), "options.min_face"),
    (dict(min_face=10001), "options.min_face"),
])
def test_a_bad_option_is_invalid_argument_and_nothing_is_called_or_stored(api, local_stack, options, field):
    landmark = local_stack.metrics_urls["face-landmark"]
    detect = ("faceanalysis_grpc_requests_total",
              (("code", "OK"), ("method", "DetectFaces"), ("service", "face-landmark")))
    stored, calls = count_stored(api), scrape(landmark).get(detect, 0)
    with pytest.raises(grpc.RpcError) as caught:
        analyze(api, unique_photo(PORTRAIT), **options)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert details.startswith(field), details
    assert ("(0, 1)" if "threshold" in field else "between 1 and 10000" if "min_face" in field
            else "ACTION_LANDMARKS, ACTION_AGE, ACTION_GENDER, ACTION_EMOTION") in details
    assert count_stored(api) == stored
    assert scrape(landmark).get(detect, 0) == calls, "face-landmark was not called"


def test_a_bad_option_in_a_stream_fails_that_image_only(api):
    good = image_input_pb2.AnalyzeImageRequest(image=photo(PORTRAIT), client_ref="good",
                                               options=common_pb2.AnalysisOptions(no_store=True,
                                                                                  actions=[A.ACTION_EMOTION]))
    bad = image_input_pb2.AnalyzeImageRequest(image=photo(PORTRAIT), client_ref="bad",
                                              options=common_pb2.AnalysisOptions(min_face=-1))
    answers = {r.client_ref: r for r in api.AnalyzeImages(iter([bad, good]), timeout=120)}
    assert answers["bad"].error.code == "INVALID_ARGUMENT" and "options.min_face" in answers["bad"].error.message
    assert len(answers["good"].result.faces) == 1 and answers["good"].result.faces[0].HasField("emotion")
