"""Configuration from the environment: defaults for the local stack, clear errors for bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from faceanalysis.runtime import config, services


def test_defaults_fit_the_local_stack(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("FACEANALYSIS_"):
            monkeypatch.delenv(name)
    settings = config.load()
    assert settings.grpc_port_for(services.FACE_LANDMARK) == 50051
    assert settings.metrics_port_for(services.DATA_STORAGE) == 9153
    assert settings.landmark_target == "dns:///localhost:50051"
    assert settings.face_margin is None  # no override: each attribute model cuts at its own margin
    assert settings.allow_unverified_models is False
    assert settings.redis_password is None


def test_bad_values_name_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("FACEANALYSIS_FACE_MARGIN", "lots")
    monkeypatch.setenv("FACEANALYSIS_DETECTOR", "magic")
    with pytest.raises(SystemExit) as err:
        config.load()
    message = str(err.value)
    assert "FACEANALYSIS_FACE_MARGIN" in message and "'lots'" in message
    assert "FACEANALYSIS_DETECTOR" in message


def test_face_margin_is_an_explicit_override(monkeypatch):
    monkeypatch.setenv("FACEANALYSIS_FACE_MARGIN", "0.25")
    assert config.load().face_margin == 0.25
    monkeypatch.setenv("FACEANALYSIS_FACE_MARGIN", "")  # a chart or compose file's "" means unset
    assert config.load().face_margin is None


def test_secret_is_never_printed(monkeypatch):
    monkeypatch.setenv("FACEANALYSIS_REDIS_PASSWORD", "hunter2-very-secret")
    settings = config.load()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


def test_serve_with_bad_config_exits_with_message():
    proc = subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", "serve", "data-storage"],
                          env={"FACEANALYSIS_GRPC_PORT": "70000", "PATH": ""}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "FACEANALYSIS_GRPC_PORT" in proc.stderr
