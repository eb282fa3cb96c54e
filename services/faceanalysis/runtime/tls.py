"""The one place TLS credentials are built: for the services' ports, for their calls to each
other, and for clients of the public API (the CLI and `faceanalysis.client`).

Files are PEM, read once at start. Everything that can be wrong with them (missing, unreadable,
not PEM, an encrypted key, a key that is not the certificate's) is found here and raised as
`TlsError` naming the setting and the file, so a service stops at start with one line instead
of failing its first handshake with an OpenSSL error that names neither.

Certificates are not reloaded while a process runs: cert-manager renews them well before they
expire (by default a third of their lifetime before), and pods pick the new files up when they
restart.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


class TlsError(ValueError):
    """A TLS file or setting that cannot work; the message names the setting and the file."""


def variable(field: str) -> str:
    """The environment variable behind a Settings field, as users set it."""
    return f"FACEANALYSIS_{field.upper()}"


def read_pem(label: str, path: Path | str) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TlsError(f"{label}: cannot read {path}: {err.strerror or err}") from None
    if b"-----BEGIN " not in data:
        raise TlsError(f"{label}: {path} is not a PEM file (no -----BEGIN line)")
    return data


def read_certificates(label: str, path: Path | str) -> bytes:
    """PEM certificates (a chain, or a CA bundle) that OpenSSL can parse."""
    data = read_pem(label, path)
    if CERT_MARKER not in data:
        raise TlsError(f"{label}: {path} holds no certificate (no {CERT_MARKER.decode()} line)")
    try:
        ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except ssl.SSLError as err:
        raise TlsError(f"{label}: {path} holds a certificate that cannot be parsed: {err.reason or err}") from None
    return data


def _read_key(label: str, path: Path) -> bytes:
    data = read_pem(label, path)
    if b"ENCRYPTED" in data:
        raise TlsError(f"{label}: {path} is an encrypted private key; gRPC needs it unencrypted")
    if b"PRIVATE KEY-----" not in data:
        raise TlsError(f"{label}: {path} holds no private key (no -----BEGIN ... PRIVATE KEY----- line)")
    return data


def _check_pair(cert_label: str, cert_path: Path, key_label: str, key_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # The password callback only runs for an encrypted key, which _read_key already refused;
        # it keeps OpenSSL from ever prompting on a terminal.
        context.load_cert_chain(cert_path, key_path, password=lambda: b"")
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err):
            raise TlsError(f"{key_label}: {key_path} is not the private key of the certificate in "
                           f"{cert_label} ({cert_path})") from None
        raise TlsError(f"{cert_label} / {key_label}: {cert_path} and {key_path} cannot be loaded as a "
                       f"certificate and its key: {err.reason or err}") from None


@dataclass(frozen=True)
class KeyPair:
    cert: bytes
    key: bytes


def key_pair(settings) -> KeyPair | None:
    """The service's own certificate and key (TLS_CERT_FILE, TLS_KEY_FILE), checked; None when unset."""
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    if cert_file is None and key_file is None:
        return None
    cert_label, key_label = variable("tls_cert_file"), variable("tls_key_file")
    if cert_file is None or key_file is None:
        have, missing = (cert_label, key_label) if key_file is None else (key_label, cert_label)
        raise TlsError(f"{have} is set but {missing} is not: TLS needs both the certificate and its key")
    pair = KeyPair(read_certificates(cert_label, cert_file), _read_key(key_label, key_file))
    _check_pair(cert_label, cert_file, key_label, key_file)
    return pair


def server_credentials(settings) -> grpc.ServerCredentials | None:
    """Credentials for the service's gRPC port: TLS with its certificate, and mTLS when
    TLS_CLIENT_CA_FILE is set (a client without a certificate signed by that CA is refused during
    the handshake, before any method runs). None: the port is plaintext."""
    pair = key_pair(settings)
    client_ca_file = settings.tls_client_ca_file
    if pair is None:
        if client_ca_file is not None:
            raise TlsError(f"{variable('tls_client_ca_file')} is set but {variable('tls_cert_file')} and "
                           f"{variable('tls_key_file')} are not: mTLS needs the server's own certificate")
        return None
    client_ca = read_certificates(variable("tls_client_ca_file"), client_ca_file) if client_ca_file else None
    return grpc.ssl_server_credentials([(pair.key, pair.cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def server_ssl_context(settings) -> ssl.SSLContext | None:
    """The same as server_credentials for an HTTPS port: the service's certificate, and client
    certificates required (signed by TLS_CLIENT_CA_FILE) when that is set. None: plain HTTP."""
    if server_credentials(settings) is None:  # checks the files and their combination
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(cadata=read_certificates(variable("tls_client_ca_file"),
                                                               settings.tls_client_ca_file).decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def describe(settings) -> str:
    """off, tls or mtls: what the gRPC port speaks, for the start-up log line."""
    if settings.tls_cert_file is None:
        return "off"
    return "mtls" if settings.tls_client_ca_file is not None else "tls"


def peer_credentials(settings) -> grpc.ChannelCredentials | None:
    """Credentials for calls to peers (image-input to the other three): with PEER_CA_FILE, TLS that
    verifies each peer against that CA and presents the service's own certificate, which peers
    that require mTLS check. None: peers are dialled in plaintext."""
    if settings.peer_ca_file is None:
        return None
    ca = read_certificates(variable("peer_ca_file"), settings.peer_ca_file)
    pair = key_pair(settings)
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=pair.key, certificate_chain=pair.cert)


def check(settings) -> None:
    """Every TLS file a service will use, checked at start; a problem ends the process with one line."""
    try:
        server_credentials(settings)
        peer_credentials(settings)
    except TlsError as err:
        raise SystemExit(f"invalid TLS configuration: {err}") from None


# --- clients of the public API ------------------------------------------------------------------

def host_port(target: str, default_port: int = 443) -> tuple[str, int]:
    """The host and port of a gRPC target: `host:port`, `dns:///host:port`, `[::1]:port`, `host`."""
    address = target.split("///", 1)[-1] if "///" in target else target.removeprefix("dns:")
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, ""
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise TlsError(f"{target!r} is not host:port") from None


@dataclass(frozen=True)
class ServerCertificate:
    pem: bytes
    # A name the certificate is valid for (DNS name, IP address or common name): checking the
    # server against this name with the certificate itself as the only root always passes.
    name: str


def fetch_server_certificate(target: str, server_name: str | None = None, timeout: float = 10.0) -> ServerCertificate:
    """The certificate a TLS server presents, taken without verifying it (for --insecure)."""
    host, port = host_port(target)
    sni = server_name or host
    probe = ssl.create_default_context()
    probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
    probe.set_alpn_protocols(["h2"])
    der = _handshake(probe, host, port, sni, timeout, lambda tls: tls.getpeercert(binary_form=True))
    if not der:
        raise TlsError(f"{target} presented no certificate")
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    # Python parses a certificate only once it is verified: verify it against itself.
    reader = ssl.create_default_context(cadata=pem.decode())
    reader.check_hostname = False
    reader.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    reader.set_alpn_protocols(["h2"])
    try:
        parsed = _handshake(reader, host, port, sni, timeout, lambda tls: tls.getpeercert())
    except ssl.SSLCertVerificationError as err:
        raise TlsError(f"{target}'s certificate cannot be used even unverified: {err.verify_message}") from None
    names = [value for kind, value in parsed.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    names += [value for rdn in parsed.get("subject", ()) for key, value in rdn if key == "commonName"]
    if not names:
        raise TlsError(f"{target}'s certificate names no host (no DNS or IP subjectAltName, no common name)")
    names = [n.strip() for n in names]
    # The name asked for, when the certificate covers it, so the TLS server name (SNI) an edge
    # routes by stays the one asked for. Otherwise any name it carries; for a wildcard, a name it covers.
    if server_name and any(_covers(n, server_name) for n in names):
        return ServerCertificate(pem, server_name)
    return ServerCertificate(pem, names[0].replace("*", "faceanalysis", 1))


def _covers(name: str, host: str) -> bool:
    if name.startswith("*."):
        return "." in host and host.split(".", 1)[1].lower() == name[2:].lower()
    return name.lower() == host.lower()


def _handshake(context: ssl.SSLContext, host: str, port: int, sni: str, timeout: float, read):
    """`read(tls_socket)` after a TLS handshake with host:port that asks for `sni`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                return read(tls)
    except ssl.SSLCertVerificationError:
        raise
    except (OSError, ssl.SSLError) as err:
        raise TlsError(f"no TLS handshake with {host}:{port}: {err}") from None


def client_credentials(target: str, *, ca: Path | str | None = None, insecure: bool = False,
                       authority: str | None = None) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Channel credentials and options for a TLS client of `target`.

    - `ca`: trust only the CA certificates in this file (else the system's roots, as grpc finds them);
    - `insecure`: trust exactly the certificate the server presents now, under a name it carries
      (`authority` when it is one of them);
    - `authority`: the name to ask for and to check the certificate against, when it differs from
      the target's host (an edge addressed by IP, a tunnel).
    """
    if ca is not None and insecure:
        raise TlsError("a CA file and insecure exclude each other: choose one")
    if insecure:
        cert = fetch_server_certificate(target, authority)
        return grpc.ssl_channel_credentials(root_certificates=cert.pem), [("grpc.ssl_target_name_override", cert.name)]
    roots = read_certificates("CA file", ca) if ca is not None else None
    options = [("grpc.ssl_target_name_override", authority)] if authority else []
    return grpc.ssl_channel_credentials(root_certificates=roots), options
