"""The options of every command that dials the public API (`analyze`, `health`): TLS, CA,
authority and API key, each with an environment variable to fall back on.

The variables keep a key out of shell history and `ps`, and let a shell be set up once for an
edge: FACEANALYSIS_TLS=1, FACEANALYSIS_CA_FILE, FACEANALYSIS_API_KEY.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

ENV_TLS, ENV_CA, ENV_KEY = "FACEANALYSIS_TLS", "FACEANALYSIS_CA_FILE", "FACEANALYSIS_API_KEY"
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS and API key")
    group.add_argument("--tls", action="store_true", default=None,
                       help=f"speak TLS, verifying the server against the system's CAs (or {ENV_TLS}=1)")
    group.add_argument("--ca", metavar="FILE",
                       help=f"verify the server against the CA certificates in this PEM file; implies --tls "
                            f"(or {ENV_CA})")
    group.add_argument("--insecure", action="store_true",
                       help="TLS without verifying the server: trust whatever certificate it presents (tests, "
                            "a self-signed edge); prints a warning")
    group.add_argument("--authority", metavar="NAME",
                       help="the host name to ask for (:authority, TLS server name) and to check the certificate "
                            "against, when --target is an address that does not carry it")
    group.add_argument("--api-key", metavar="KEY",
                       help=f"send `authorization: Bearer KEY` on every call (better: {ENV_KEY}, which stays out "
                            "of shell history and ps)")


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in TRUE | FALSE:
        raise SystemExit(f"error: {name}={os.environ[name]!r}: use 1 or 0")
    return value in TRUE


def connection(args):
    """The client.Connection the options (else the environment) describe. An explicit --insecure
    wins over a CA file from the environment."""
    from faceanalysis.client import Connection, InsecureWarning, insecure_warning

    if args.ca and args.insecure:
        raise SystemExit("error: --ca and --insecure exclude each other: verify against a CA, or do not verify")
    ca = None if args.insecure else (args.ca or os.environ.get(ENV_CA) or None)
    tls = bool(args.tls) or _env_flag(ENV_TLS)
    if args.insecure:
        # One plain line on stderr instead of Python's warning format with a source line.
        warnings.simplefilter("ignore", InsecureWarning)
        print(f"warning: --insecure: {insecure_warning(args.target)}", file=sys.stderr)
    return Connection(args.target, tls=tls, ca=ca, insecure=args.insecure, authority=args.authority,
                      api_key=args.api_key or os.environ.get(ENV_KEY) or None)
