"""Per-request options: checked in one place (runtime/options.py), each bad value refused with a
message naming the field and its range, and normalised so that equal requests look equal."""

from __future__ import annotations

import grpc
import pytest

from faceanalysis.image_input import fingerprint
from faceanalysis.runtime import options
from faceanalysis.runtime.options import DetectOptions, InvalidOption, Options
from faceanalysis.v1 import common_pb2, face_landmark_pb2

A = common_pb2


def parse(**fields) -> Options:
    return Options.parse(common_pb2.AnalysisOptions(**fields))


def test_empty_options_mean_everything_at_the_server_defaults():
    opts = parse()
    assert opts == Options()
    assert opts.actions == {"landmarks", "age", "gender", "emotion"}
    assert opts.threshold is None and opts.min_face is None
    assert opts.detect == DetectOptions()
    assert opts.attributes_request([]).tasks == []  # all three travel as none: the peer's default
    assert opts.detect.request(b"img") == face_landmark_pb2.DetectFacesRequest(image=b"img")


def test_values_are_normalised():
    opts = parse(actions=[A.ACTION_EMOTION, A.ACTION_AGE, A.ACTION_EMOTION], detection_threshold=0.95, min_face=40,
                 skip_cache=True)
    assert opts.actions == {"emotion", "age"}
    assert opts.attribute_tasks == ("age", "emotion")  # the models' run order
    assert opts.threshold == 0.95  # not the float32 0.949999988
    assert opts.min_face == 40 and opts.skip_cache and not opts.no_store
    assert opts.detect == DetectOptions(0.95, 40, landmarks=False, crops=True)
    assert list(opts.attributes_request([]).tasks) == [A.ACTION_AGE, A.ACTION_EMOTION]
    # All four actions named one by one are the same request as none named.
    assert parse(actions=[4, 3, 2, 1]) == parse()


def test_what_each_action_needs_from_face_landmark():
    assert parse(actions=[A.ACTION_LANDMARKS]).detect == DetectOptions(landmarks=True, crops=False)
    assert parse(actions=[A.ACTION_GENDER]).detect == DetectOptions(landmarks=False, crops=True)
    request = parse(actions=[A.ACTION_LANDMARKS]).detect.request(b"x")
    assert request.skip_crops and not request.skip_landmarks


@pytest.mark.parametrize("fields,words", [
    (dict(actions=[A.ACTION_UNSPECIFIED]), "options.actions may hold only ACTION_LANDMARKS, ACTION_AGE, "
                                           r"ACTION_GENDER, ACTION_EMOTION \(none means all\); got ACTION_UNSPECIFIED"),
    (dict(actions=[A.ACTION_AGE, 42]), "options.actions may hold only .*; got 42"),
    (dict(detection_threshold=1.0), r"options.detection_threshold must be in \(0, 1\), or 0 for the server's "
                                    r"default; got 1$"),
    (dict(detection_threshold=-0.5), r"options.detection_threshold must be in \(0, 1\).*got -0.5"),
    (dict(detection_threshold=float("nan")), r"options.detection_threshold must be in \(0, 1\).*got nan"),
    (dict(detection_threshold=7), r"options.detection_threshold .*got 7"),
    (dict(min_face=-1), "options.min_face must be between 1 and 10000 pixels, or 0 for the server's default; "
                        "got -1"),
    (dict(min_face=10001), "options.min_face must be between 1 and 10000 pixels.*got 10001"),
])
def test_bad_values_are_invalid_argument_naming_field_and_range(fields, words):
    with pytest.raises(InvalidOption, match=words) as caught:
        parse(**fields)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_edges_of_the_ranges_are_accepted():
    assert parse(detection_threshold=0.01).threshold == 0.01
    assert parse(detection_threshold=0.999).threshold == 0.999
    assert parse(min_face=1).min_face == 1
    assert parse(min_face=options.MAX_MIN_FACE).min_face == options.MAX_MIN_FACE


def test_peers_check_what_they_receive_with_the_same_rules():
    with pytest.raises(InvalidOption, match="detection_threshold must be in"):
        DetectOptions.from_request(face_landmark_pb2.DetectFacesRequest(detection_threshold=2))
    with pytest.raises(InvalidOption, match="min_face must be between"):
        DetectOptions.from_request(face_landmark_pb2.DetectFacesRequest(min_face=-3))
    assert DetectOptions.from_request(face_landmark_pb2.DetectFacesRequest()) == DetectOptions()
    assert options.attribute_tasks([]) == ("age", "gender", "emotion")
    assert options.attribute_tasks([A.ACTION_EMOTION, A.ACTION_AGE]) == ("age", "emotion")
    with pytest.raises(InvalidOption, match="tasks may hold only ACTION_AGE, ACTION_GENDER, ACTION_EMOTION"):
        options.attribute_tasks([A.ACTION_LANDMARKS])


YUNET = common_pb2.ModelInfo(name="yunet", task="face_detection", file="y.onnx", sha256="1" * 64,
                             parameters={"detection_threshold": "0.9", "detection_min_face": "48"})
DLIB = common_pb2.ModelInfo(name="dlib_68", task="landmarks", file="d.dat", sha256="2" * 64)
ATTRIBUTES = [common_pb2.ModelInfo(name=f"deepface_{t}", task=t, file=f"{t}.onnx", sha256="3" * 64)
              for t in ("age", "gender", "emotion")]
DESCRIBED = [YUNET, DLIB, *ATTRIBUTES]


def names(models) -> list[str]:
    return [m.name for m in models]


def test_answering_models_are_those_the_actions_need_with_the_parameters_they_ran_with():
    assert parse().answering_models(DESCRIBED) == DESCRIBED
    emotion = parse(actions=[A.ACTION_EMOTION], detection_threshold=0.5, min_face=100).answering_models(DESCRIBED)
    assert names(emotion) == ["yunet", "dlib_68", "deepface_emotion"]  # crops may be levelled by dlib's eyes
    assert dict(emotion[0].parameters) == {"detection_threshold": "0.5", "detection_min_face": "100", "min_face": "100"}
    assert dict(YUNET.parameters) == {"detection_threshold": "0.9", "detection_min_face": "48"}, "a copy was changed"
    assert names(parse(actions=[A.ACTION_LANDMARKS]).answering_models(DESCRIBED)) == ["yunet", "dlib_68"]
    # Boxes only (no action of face-landmark's own, no attribute): dlib never runs, and is not named.
    assert DetectOptions(landmarks=False, crops=False).describe(DLIB) is None


def test_the_face_size_crops_are_shrunk_to_is_named_and_keyed():
    sized = parse().answering_models(DESCRIBED, face_size=160)
    assert dict(sized[1].parameters) == {"face_size": "160"} and not DLIB.parameters  # a copy, named
    assert sized[0] == YUNET and sized[2:] == ATTRIBUTES  # nothing else changes
    assert fingerprint.digest(sized) != fingerprint.digest(parse().answering_models(DESCRIBED))
    # No crops (landmarks only): no face size to name, whatever was asked.
    landmarks = parse(actions=[A.ACTION_LANDMARKS]).answering_models(DESCRIBED, face_size=160)
    assert landmarks == [YUNET, DLIB]


def test_cache_keys_follow_the_options_that_change_the_answer():
    def key(**fields) -> str:
        opts = parse(**fields)
        return fingerprint.cache_key("ab" * 32, fingerprint.digest(opts.answering_models(DESCRIBED)), opts)

    default = key()
    assert default == fingerprint.cache_key("ab" * 32, fingerprint.digest(DESCRIBED)), "keys of old stay"
    assert key(skip_cache=True) == key(no_store=True) == default
    assert key(actions=[4, 1, 2, 3]) == default
    assert key(actions=[A.ACTION_EMOTION]) != default
    assert key(actions=[A.ACTION_EMOTION, A.ACTION_AGE]) == key(actions=[A.ACTION_AGE, A.ACTION_EMOTION])
    assert key(actions=[A.ACTION_EMOTION]).endswith(":emotion")
    assert key(detection_threshold=0.95) != default
    assert key(detection_threshold=0.9) == default, "the server's own threshold, asked for by name"
    assert key(min_face=48) != default, "an explicit min_face also drops smaller faces"
    assert key(min_face=40) != key(min_face=41)
