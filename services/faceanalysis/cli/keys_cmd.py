"""`faceanalysis keys`: API keys and the hashed lines image-input reads (format: runtime/auth.py).

`keys create --tenant T` prints the new key on stdout, the only time it is ever shown, and its
key file line on stderr, so `faceanalysis keys create --tenant acme 2>>api-keys` both shows the
key and keeps its line; `--append FILE` writes the line itself. `keys hash` prints the line's
first field for a key you already have; without an argument it reads the key from stdin, which
keeps it out of shell history and `ps`.

Only this module's functions import the auth code: `faceanalysis --help` stays quick.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path


def add_parser(sub) -> None:
    """Adds `keys create` and `keys hash` to the CLI's subcommands."""
    s = sub.add_parser("keys", help="make API keys for image-input (FACEANALYSIS_API_KEYS_FILE)")
    actions = s.add_subparsers(dest="action", required=True, metavar="{create,hash}")
    a = actions.add_parser("create", help="print a new key on stdout and its key file line on stderr")
    a.add_argument("--tenant", required=True, help="whose analyses the key sees: a-z, 0-9 and '-', at most 63")
    a.add_argument("--scopes", default="analyze,read,delete",
                   help="comma-separated subset of analyze,read,delete (default: all three)")
    a.add_argument("--append", metavar="FILE", help="append the line to this key file instead of printing it")
    a.set_defaults(fn=run_create)
    a = actions.add_parser("hash", help="print the sha256 of a key, as the key file wants it")
    a.add_argument("key", nargs="?", help="the key (default: read it from stdin)")
    a.set_defaults(fn=run_hash)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_create(args) -> int:
    from faceanalysis.runtime import auth, tenants

    if not tenants.valid(args.tenant):
        return _fail(f"--tenant must be {tenants.NAME_RULE}, got {args.tenant!r}")
    try:
        scopes = auth.parse_scopes(args.scopes)
    except ValueError as err:
        return _fail(f"--scopes: {err}")
    key = auth.new_key()
    line = auth.format_line(auth.hash_key(key), args.tenant, scopes)
    if args.append:
        try:
            append_line(Path(args.append), line)
        except OSError as err:
            return _fail(f"cannot append to {args.append}: {err.strerror or err}")  # the key is never shown
        print(f"added a key for tenant {args.tenant} to {args.append}", file=sys.stderr)
    else:
        print(line, file=sys.stderr)
    print(key, flush=True)
    return 0


def append_line(path: Path, line: str) -> None:
    """Appends `line`, starting a new line if the file does not end with one."""
    before = path.read_bytes() if path.is_file() else b""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(("\n" if before and not before.endswith(b"\n") else "") + line + "\n")


def run_hash(args) -> int:
    from faceanalysis.runtime import auth

    if args.key is not None:
        key = args.key
    elif sys.stdin.isatty():
        key = getpass.getpass("API key: ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        return _fail("no key given: pass it as an argument or on stdin")
    print(auth.hash_key(key))
    return 0


def local_stack_banner(api_keys_file: Path | None) -> str:
    """What `faceanalysis up` and `run` say about API keys; the stack's image-input reads the
    same FACEANALYSIS_API_KEYS_FILE from the environment."""
    if api_keys_file is None:
        return ("API keys: off for the local stack, every caller is tenant `default` "
                "(set FACEANALYSIS_API_KEYS_FILE to turn them on)")
    return f"API keys: on, from {api_keys_file}: calls need `authorization: Bearer <key>`"
