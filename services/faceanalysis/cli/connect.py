"""The options of every command that dials the public API (`analyze`, `health`): TLS, CA,
authority and API key, each with an environment variable to fall back on.

The variables keep a key out of shell history and `ps`, and let a shell be set up once for an
edge: FACEANALYSIS_TLS=1, FACEANALYSIS_CA_FILE, FACEANALYSIS_INSECURE=1, FACEANALYSIS_AUTHORITY,
FACEANALYSIS_API_KEY. A flag wins over its variable, and over the variable of the option it excludes
(--ca over FACEANALYSIS_INSECURE, --insecure over FACEANALYSIS_CA_FILE).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

ENV_TLS, ENV_CA, ENV_KEY = "FACEANALYSIS_TLS", "FACEANALYSIS_CA_FILE", "FACEANALYSIS_API_KEY"
ENV_INSECURE, ENV_AUTHORITY = "FACEANALYSIS_INSECURE", "FACEANALYSIS_AUTHORITY"
VARIABLES = (ENV_TLS, ENV_CA, ENV_INSECURE, ENV_AUTHORITY, ENV_KEY)  # all that the options fall back on
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
                            f"a self-signed edge); prints a warning (or {ENV_INSECURE}=1)")
    group.add_argument("--authority", metavar="NAME",
                       help="the host name to ask for (:authority, TLS server name) and to check the certificate "
                            f"against, when --target is an address that does not carry it (or {ENV_AUTHORITY})")
    group.add_argument("--api-key", metavar="KEY",
                       help=f"send `authorization: Bearer KEY` on every call (better: {ENV_KEY}, which stays out "
                            "of shell history and ps)")


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in TRUE | FALSE:
        raise SystemExit(f"error: {name}={os.environ[name]!r}: use 1 or 0")
    return value in TRUE


def _insecure(args) -> str | None:
    """What turns verification off, named for the warning ("--insecure", "FACEANALYSIS_INSECURE=1"),
    or None. An explicit --ca wins over the variable (as --insecure wins over FACEANALYSIS_CA_FILE);
    both from the environment is a mistake to point out, not to settle by quietly trusting any
    certificate."""
    if args.ca and args.insecure:
        raise SystemExit("error: --ca and --insecure exclude each other: verify against a CA, or do not verify")
    if args.insecure:
        return "--insecure"
    if args.ca or not _env_flag(ENV_INSECURE):
        return None
    if os.environ.get(ENV_CA):
        raise SystemExit(f"error: {ENV_CA} and {ENV_INSECURE} exclude each other: unset one of them")
    return f"{ENV_INSECURE}={os.environ[ENV_INSECURE]}"


def connection(args):
    """The client.Connection the options (else the environment) describe."""
    from faceanalysis.client import Connection, InsecureWarning, insecure_warning

    insecure = _insecure(args)
    ca = None if insecure else (args.ca or os.environ.get(ENV_CA) or None)
    tls = bool(args.tls) or _env_flag(ENV_TLS)
    if insecure:
        # One plain line on stderr instead of Python's warning format with a source line.
        warnings.simplefilter("ignore", InsecureWarning)
        print(f"warning: {insecure}: {insecure_warning(args.target)}", file=sys.stderr)
    return Connection(args.target, tls=tls, ca=ca, insecure=bool(insecure),
                      authority=args.authority or os.environ.get(ENV_AUTHORITY) or None,
                      api_key=args.api_key or os.environ.get(ENV_KEY) or None)
