"""TLS settings: every broken file stops a service at start with one line that names it."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from faceanalysis.cli import connect
from faceanalysis.client import Connection
from faceanalysis.runtime import config, tls
from tests.certs import CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = CA(folder)
    return ca, ca.issue("server"), ca.issue("other")


def settings(**fields) -> config.Settings:
    return config.Settings(**fields)


def test_valid_files_give_tls_and_mtls(pki):
    ca, server, _ = pki
    plain = settings()
    assert tls.server_credentials(plain) is None and tls.peer_credentials(plain) is None
    assert tls.describe(plain) == "off"
    one_way = settings(tls_cert_file=server.cert, tls_key_file=server.key)
    assert tls.server_credentials(one_way) is not None and tls.describe(one_way) == "tls"
    mutual = settings(tls_cert_file=server.cert, tls_key_file=server.key, tls_client_ca_file=ca.path,
                      peer_ca_file=ca.path)
    assert tls.server_credentials(mutual) is not None and tls.describe(mutual) == "mtls"
    assert tls.peer_credentials(mutual) is not None
    tls.check(mutual)


def test_empty_variables_mean_off(monkeypatch):
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "PEER_CA_FILE", "HEALTH_PORT"):
        monkeypatch.setenv(f"FACEANALYSIS_{name}", "")
    loaded = config.load()
    assert loaded.tls_cert_file is None and loaded.health_port is None
    assert tls.server_credentials(loaded) is None


def problem(**fields) -> str:
    with pytest.raises(tls.TlsError) as err:
        tls.server_credentials(settings(**fields))
    return str(err.value)


def test_missing_file_is_named(pki, tmp_path):
    _, server, _ = pki
    missing = tmp_path / "nope.key"
    message = problem(tls_cert_file=server.cert, tls_key_file=missing)
    assert message == f"FACEANALYSIS_TLS_KEY_FILE: cannot read {missing}: No such file or directory"


def test_half_a_pair(pki):
    _, server, _ = pki
    assert "FACEANALYSIS_TLS_CERT_FILE is set but FACEANALYSIS_TLS_KEY_FILE is not" in problem(tls_cert_file=server.cert)
    assert "FACEANALYSIS_TLS_KEY_FILE is set but FACEANALYSIS_TLS_CERT_FILE is not" in problem(tls_key_file=server.key)


def test_not_pem_and_swapped_files(pki, tmp_path):
    _, server, _ = pki
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    assert f"FACEANALYSIS_TLS_CERT_FILE: {junk} is not a PEM file" in problem(tls_cert_file=junk, tls_key_file=server.key)
    assert "holds no certificate" in problem(tls_cert_file=server.key, tls_key_file=server.key)
    assert "holds no private key" in problem(tls_cert_file=server.cert, tls_key_file=server.cert)


def test_key_of_another_certificate(pki):
    _, server, other = pki
    message = problem(tls_cert_file=server.cert, tls_key_file=other.key)
    assert message == (f"FACEANALYSIS_TLS_KEY_FILE: {other.key} is not the private key of the certificate in "
                       f"FACEANALYSIS_TLS_CERT_FILE ({server.cert})")


def test_encrypted_key(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    _, server, _ = pki
    key = serialization.load_pem_private_key(server.key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    assert "is an encrypted private key" in problem(tls_cert_file=server.cert, tls_key_file=locked)


def test_client_ca_needs_a_server_certificate(pki):
    ca, _, _ = pki
    assert "FACEANALYSIS_TLS_CLIENT_CA_FILE is set but" in problem(tls_client_ca_file=ca.path)


def test_peer_ca_unreadable(tmp_path):
    with pytest.raises(tls.TlsError, match="FACEANALYSIS_PEER_CA_FILE: cannot read"):
        tls.peer_credentials(settings(peer_ca_file=tmp_path / "ca.crt"))


def test_service_exits_at_start_with_one_line(pki, tmp_path):
    _, server, _ = pki
    env = {"FACEANALYSIS_TLS_CERT_FILE": str(server.cert), "FACEANALYSIS_TLS_KEY_FILE": str(tmp_path / "gone.key"),
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "faceanalysis.cli.main", "serve", "data-storage"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"invalid TLS configuration: FACEANALYSIS_TLS_KEY_FILE: cannot read "
                                   f"{tmp_path / 'gone.key'}: No such file or directory")


@pytest.mark.parametrize("target, expected", [
    ("localhost:50050", ("localhost", 50050)), ("dns:///face-landmark:50051", ("face-landmark", 50051)),
    ("[::1]:443", ("::1", 443)), ("faces.example.com", ("faces.example.com", 443)),
    ("ipv4:///10.0.0.1:8443", ("10.0.0.1", 8443)),
])
def test_host_port(target, expected):
    assert tls.host_port(target) == expected


def cli_args(**given) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="edge:443")
    connect.add_options(parser)
    return parser.parse_args([item for key, value in given.items()
                              for item in ([f"--{key}"] if value is True else [f"--{key}", value])])


def test_cli_options_fall_back_on_the_environment(monkeypatch):
    for name in connect.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert connect.connection(cli_args()) == Connection("edge:443")
    monkeypatch.setenv(connect.ENV_TLS, "1")
    monkeypatch.setenv(connect.ENV_CA, "/ca.pem")
    monkeypatch.setenv(connect.ENV_KEY, "fa_secret")
    found = connect.connection(cli_args(authority="faces.example.com"))
    assert found == Connection("edge:443", tls=True, ca="/ca.pem", authority="faces.example.com", api_key="fa_secret")
    assert "fa_secret" not in repr(found)
    assert connect.connection(cli_args(**{"api-key": "fa_other"})).api_key == "fa_other"
    # An explicit --insecure wins over the environment's CA file.
    assert connect.connection(cli_args(insecure=True)).ca is None
    with pytest.raises(SystemExit, match="--ca and --insecure exclude each other"):
        connect.connection(cli_args(ca="/x.pem", insecure=True))
    monkeypatch.setenv(connect.ENV_TLS, "maybe")
    with pytest.raises(SystemExit, match="FACEANALYSIS_TLS='maybe': use 1 or 0"):
        connect.connection(cli_args())


def test_cli_insecure_and_authority_fall_back_on_the_environment(monkeypatch, capsys):
    for name in connect.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(connect.ENV_INSECURE, "yes")
    monkeypatch.setenv(connect.ENV_AUTHORITY, "faces.example.com")
    assert connect.connection(cli_args()) == Connection("edge:443", insecure=True, authority="faces.example.com")
    # The warning names the variable that turned verification off.
    assert "warning: FACEANALYSIS_INSECURE=yes: not verifying the certificate of edge:443" in capsys.readouterr().err
    assert connect.connection(cli_args(authority="other.example.com")).authority == "other.example.com"
    # An explicit --ca wins over the variable; a CA file from the environment as well is a mistake.
    assert connect.connection(cli_args(ca="/x.pem")) == Connection("edge:443", ca="/x.pem",
                                                                   authority="faces.example.com")
    monkeypatch.setenv(connect.ENV_CA, "/ca.pem")
    with pytest.raises(SystemExit, match="FACEANALYSIS_CA_FILE and FACEANALYSIS_INSECURE exclude each other"):
        connect.connection(cli_args())
    assert connect.connection(cli_args(insecure=True)).ca is None  # the flag still wins
    monkeypatch.setenv(connect.ENV_INSECURE, "0")
    assert connect.connection(cli_args()) == Connection("edge:443", ca="/ca.pem", authority="faces.example.com")
    monkeypatch.setenv(connect.ENV_INSECURE, "maybe")
    with pytest.raises(SystemExit, match="FACEANALYSIS_INSECURE='maybe': use 1 or 0"):
        connect.connection(cli_args())
