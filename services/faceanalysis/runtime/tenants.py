"""Tenants: whose analyses a call may see.

image-input learns the caller's tenant from its API key (`runtime.auth`) and names it in every
call to data-storage, which keeps each tenant's results, cache and archive apart. With API keys
off every caller is tenant `default`.

The tenant of the call being served lives in a context variable, like the request id: the auth
interceptor binds it, the handlers read it once and pass it on explicitly.
"""

from __future__ import annotations

import contextvars
import re

import grpc

DEFAULT = "default"
# Tenant names become Redis key parts and directory names: no separators, no dots, no case.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NAME_RULE = "1-63 characters of a-z, 0-9 and '-', not starting with '-'"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default=DEFAULT)


def valid(name: str) -> bool:
    return bool(NAME.match(name or ""))


def current() -> str:
    """The tenant of the call being served; `default` when API keys are off."""
    return _current.get()


def bind(name: str) -> contextvars.Token:
    return _current.set(name)


def reset(token: contextvars.Token) -> None:
    _current.reset(token)


async def require_valid(name: str, context) -> str:
    """`name`, or abort the call with INVALID_ARGUMENT. No default for an empty name: a caller
    that forgot the tenant must fail, not read or write another tenant's results."""
    if not valid(name):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tenant must be {NAME_RULE}, got {name[:80]!r}")
    return name
