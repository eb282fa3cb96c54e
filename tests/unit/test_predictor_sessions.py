"""The predictor's ONNX Runtime sessions are sized to the container and change no number.

Uses the real model files, pulled from the local mirror (FACEANALYSIS_MODEL_MIRROR).
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from faceanalysis.face_attributes.predictor import MODEL_FILES, Predictor, run_models
from faceanalysis.runtime import cpu

THREADS = 2


@pytest.fixture(scope="module")
def predictor(models_dir):
    return Predictor(models_dir, cpus=THREADS)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(20240601)
    return rng.random((16, 224, 224, 3), dtype=np.float32)


def deepface_default_session(name: str):
    """The session DeepFace itself builds for a model (default options)."""
    from deepface.commons import onnx_utils

    return onnx_utils.build_session(file_name=MODEL_FILES[name], source_url=[])


def raw_outputs(predictor: Predictor, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Each model's output through DeepFace's own client code path."""
    return run_models(predictor.clients, batch, observe=False)


def test_sessions_carry_the_thread_count_and_no_spinning(predictor):
    assert predictor.threads == THREADS
    for name, client in predictor.clients.items():
        options = client.model.get_session_options()
        assert options.intra_op_num_threads == THREADS, name
        assert options.inter_op_num_threads == 1, name
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL, name
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0", name
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0", name


def test_sessions_load_the_same_files_on_the_same_providers(predictor, models_dir):
    for name, client in predictor.clients.items():
        default = deepface_default_session(name)
        assert client.model.get_providers() == default.get_providers(), name
        assert [i.name for i in client.model.get_inputs()] == [i.name for i in default.get_inputs()], name
        expected = (models_dir / ".deepface" / "weights" / MODEL_FILES[name]).resolve()
        assert expected.samefile(client.model._model_path), name


def test_clients_are_deepfaces_own_classes_around_our_sessions(predictor):
    """DeepFace's predict and preprocessing run unchanged; only the session is ours. Building the
    clients must not go through DeepFace's constructor, which loads a default session first."""
    from deepface.modules import modeling

    for name, client in predictor.clients.items():
        assert type(client) is modeling.get_model_class(task="facial_attribute", model_name=name)
        options = client.model.get_session_options()
        assert options.intra_op_num_threads == THREADS
        assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern, name
        assert options.get_session_config_entry("session.disable_prepacking") == "1", name


def test_outputs_are_identical_to_deepfaces_default_sessions(predictor, batch):
    ours_raw = raw_outputs(predictor, batch)
    ours = predictor.predict(batch)
    resized = {name: client.model for name, client in predictor.clients.items()}
    try:
        for name, client in predictor.clients.items():
            client.model = deepface_default_session(name)
        theirs_raw = raw_outputs(predictor, batch)
        theirs = predictor.predict(batch)
    finally:
        for name, client in predictor.clients.items():
            client.model = resized[name]
    # Without prepacking the GEMM kernels sum in another order: float32 rounding (measured up to
    # 1.2e-5 on a probability), nothing a result shows.
    for name in MODEL_FILES:
        assert ours_raw[name].shape == theirs_raw[name].shape, name
        np.testing.assert_allclose(ours_raw[name], theirs_raw[name], rtol=1e-4, atol=1e-4, err_msg=name)
    assert len(ours) == len(theirs) == len(batch)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose([a.age, a.age_low, a.age_high, a.woman], [b.age, b.age_low, b.age_high, b.woman],
                                   rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(a.emotions, b.emotions, rtol=1e-4, atol=1e-4)


def test_default_thread_count_is_the_containers_cpus(models_dir, caplog):
    with caplog.at_level(logging.INFO, logger="faceanalysis.face_attributes.predictor"):
        predictor = Predictor(models_dir)
    assert predictor.threads == cpu.available_cpus()
    assert predictor.clients["Age"].model.get_session_options().intra_op_num_threads == predictor.threads
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("threads") is not None]
    assert records and records[-1].fields["threads"] == predictor.threads


def test_only_large_fp32_weights_ask_for_mapped_blocks(predictor):
    """The stand-ins are small: no fixed mmap threshold (it costs page faults); a model whose
    weights (here in an external .data file, as the VGG-cost ones) exceed the bar gets it."""
    assert not predictor.large_fp32_weights()
    age = predictor.paths["Age"]
    data = age.with_name(age.name + ".data")
    assert not data.exists()
    assert predictor.large_fp32_weights(threshold=age.stat().st_size - 1)
    assert not predictor.large_fp32_weights(threshold=10 * 1024 * 1024)
