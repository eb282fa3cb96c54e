"""API keys at image-input: the hashed key file, and the interceptor that checks every call.

The key file (FACEANALYSIS_API_KEYS_FILE; a Secret in the chart) holds one key a line:

    <sha256 hex of the key's UTF-8 bytes> <tenant> [<scopes>]

`#` starts a comment, blank lines are ignored, scopes are a comma-separated subset of
analyze,read,delete (absent: all three). Only hashes are stored, so the file, or a leaked copy
of it, lets nobody call the API. `faceanalysis keys create` makes a key and its line.

Clients send `authorization: Bearer <key>` metadata. The presented key is hashed and compared
with every stored hash by hmac.compare_digest, without stopping at a match, so the time an
answer takes says nothing about the stored hashes. Health and reflection need no key: probes
and `grpcurl list` must work without one. Keys are never logged nor echoed in errors, not
even the parts of a malformed key file line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from faceanalysis.runtime import services, tenants
from faceanalysis.runtime.interceptors import wrap_handler
from faceanalysis.runtime.logging import log as log_fields

log = logging.getLogger(__name__)

SCOPES = ("analyze", "read", "delete")
KEY_PREFIX, KEY_LENGTH = "fa_", 40
KEY_ALPHABET = string.ascii_letters + string.digits
HEADER = "authorization"
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_LINE_FORMAT = "`<sha256 hex of the key> <tenant> [<scopes>]`"

# The scope each public method needs. A method missing here is refused to every key (fail closed).
METHOD_SCOPES = {
    f"/{services.IMAGE_INPUT.grpc_service}/{method}": scope
    for method, scope in (("AnalyzeImage", "analyze"), ("AnalyzeImages", "analyze"), ("GetAnalysis", "read"),
                          ("ListAnalyses", "read"), ("DeleteAnalysis", "delete"))
}
EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")

MISSING = f"missing API key: send `{HEADER}: Bearer <key>`"
MALFORMED = f"malformed {HEADER} metadata: send one `{HEADER}: Bearer <key>`"
UNKNOWN = "unknown API key"


class KeyFileError(Exception):
    """The key file cannot be read or has malformed lines; the message names the file and lines."""


@dataclass(frozen=True)
class ApiKey:
    digest: str  # sha256 hex of the key, lowercase
    tenant: str
    scopes: frozenset[str]


def new_key() -> str:
    """A fresh key: `fa_` and 40 random letters and digits (about 238 bits)."""
    return KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    """`analyze,read` -> {"analyze", "read"}; ValueError for an empty or unknown scope."""
    names = text.split(",")
    if not all(name in SCOPES for name in names):
        raise ValueError(f"scopes must be a comma-separated subset of {','.join(SCOPES)}")
    return frozenset(names)


def format_line(digest: str, tenant: str, scopes: frozenset[str] = frozenset(SCOPES)) -> str:
    """The key file line for a key; scopes are left out when the key has all of them."""
    fields = [digest, tenant]
    if set(scopes) != set(SCOPES):
        fields.append(",".join(s for s in SCOPES if s in scopes))
    return " ".join(fields)


def parse_line(line: str) -> ApiKey | None:
    """One line of the key file: an ApiKey, None for a blank or comment line, or ValueError.

    The error never quotes the line: a plain key pasted by mistake must not reach a log."""
    fields = line.split("#", 1)[0].split()
    if not fields:
        return None
    if len(fields) not in (2, 3):
        raise ValueError(f"expected {_LINE_FORMAT}, found {len(fields)} fields")
    digest, tenant = fields[0], fields[1]
    if not _SHA256_HEX.match(digest):
        if digest.startswith(KEY_PREFIX):
            raise ValueError("the first field looks like a plain API key: store its sha256 "
                             "(`faceanalysis keys hash`), never the key itself")
        raise ValueError("the first field must be the key's sha256 as 64 hex characters")
    if not tenants.valid(tenant):
        raise ValueError(f"the tenant (second field) must be {tenants.NAME_RULE}")
    try:
        scopes = parse_scopes(fields[2]) if len(fields) == 3 else frozenset(SCOPES)
    except ValueError as err:
        raise ValueError(f"the third field: {err}") from None
    return ApiKey(digest.lower(), tenant, scopes)


def parse(text: str, source: str) -> list[ApiKey]:
    """Every key of a key file's text; KeyFileError lists each bad line as `source:line: problem`."""
    keys: list[ApiKey] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            key = parse_line(line)
        except ValueError as err:
            problems.append(f"{source}:{number}: {err}")
            continue
        if key is None:
            continue
        if key.digest in seen:
            problems.append(f"{source}:{number}: the same key hash is already on line {seen[key.digest]}")
            continue
        seen[key.digest] = number
        keys.append(key)
    if problems:
        raise KeyFileError("malformed API key file:\n  " + "\n  ".join(problems))
    if not keys:
        raise KeyFileError(f"{source} holds no keys: add a line {_LINE_FORMAT} (`faceanalysis keys create` "
                           "prints one), or unset FACEANALYSIS_API_KEYS_FILE to turn API keys off")
    return keys


class KeyRing:
    """The keys image-input accepts."""

    def __init__(self, keys: list[ApiKey]):
        self.keys = keys
        self._digests = [(key.digest.encode(), key) for key in keys]

    @classmethod
    def load(cls, path: Path) -> "KeyRing":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise KeyFileError(f"cannot read the API key file {path} (FACEANALYSIS_API_KEYS_FILE): {reason}") from None
        return cls(parse(text, str(path)))

    def find(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented).encode()
        found = None
        for stored, key in self._digests:  # every hash, even after a match: constant time
            if hmac.compare_digest(stored, digest):
                found = key
        return found


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def presented_key(metadata) -> str:
    """The key of `authorization: Bearer <key>`; Refused(UNAUTHENTICATED) when there is none."""
    values = [value for name, value in (metadata or ()) if name == HEADER]
    if not values:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, MISSING)
    scheme, _, key = values[0].strip().partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not key.strip():
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, MALFORMED)
    return key.strip()


def authorize(ring: KeyRing, method: str, metadata) -> ApiKey:
    """The caller's key when it may call `method`; raises Refused otherwise."""
    key = ring.find(presented_key(metadata))
    if key is None:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, UNKNOWN)
    scope = METHOD_SCOPES.get(method)
    if scope not in key.scopes:
        name = method.rsplit("/", 1)[-1]
        raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                      f"{name} needs an API key with the `{scope}` scope; this key has: {','.join(sorted(key.scopes))}"
                      if scope else f"{name} is open to no API key")
    return key


@asynccontextmanager
async def _as_tenant(tenant: str, _context):
    token = tenants.bind(tenant)
    try:
        yield
    finally:
        tenants.reset(token)


def _refusing(method: str, refused: Refused):
    @asynccontextmanager
    async def refuse(context):
        log_fields(log, logging.INFO, "refused", method=method.rsplit("/", 1)[-1], code=refused.code.name,
                   reason=refused.message)
        await context.abort(refused.code, refused.message)
        yield  # never reached: abort raises

    return refuse


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid key for the method's scope; binds the key's tenant for the rest."""

    def __init__(self, ring: KeyRing):
        self.ring = ring

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT):
            return handler
        try:
            key = authorize(self.ring, method, handler_call_details.invocation_metadata)
        except Refused as refused:
            return wrap_handler(handler, _refusing(method, refused))
        return wrap_handler(handler, lambda context: _as_tenant(key.tenant, context))


def interceptors(api_keys_file: Path | None) -> tuple[grpc.aio.ServerInterceptor, ...]:
    """image-input's auth interceptor, or none when API keys are off.

    A key file that cannot be used stops the service with the reason: a pod that does not start
    is noticed, an API silently open to everyone (or to no one) is not."""
    if api_keys_file is None:
        log_fields(log, logging.INFO, f"API keys off: every caller is tenant {tenants.DEFAULT}")
        return ()
    try:
        ring = KeyRing.load(api_keys_file)
    except KeyFileError as err:
        raise SystemExit(f"API keys: {err}") from None
    log_fields(log, logging.INFO, "API keys on", file=str(api_keys_file), keys=len(ring.keys),
               tenants=sorted({key.tenant for key in ring.keys}))
    return (AuthInterceptor(ring),)
