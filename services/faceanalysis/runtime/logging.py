"""JSON logs, one object per line, carrying the request id of the call being served.

The request id travels between services as gRPC metadata (`x-request-id`), so one id
follows an image through image-input, face-landmark, face-attributes and data-storage.
Log records never carry image bytes or payloads: callers log sizes and ids only.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid

REQUEST_ID_HEADER = "x-request-id"
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex


# A caller's request id goes into every log line of its call and onward to the peers: only short
# ids of plain characters are taken as they are (no log injection, no megabyte ids), and none
# shaped like an API key (fa_ and 40 characters), so a key pasted into the wrong header is not logged.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_KEY_SHAPED = re.compile(r"fa_[A-Za-z0-9]{40}")


def accept_request_id(incoming: str | None) -> str:
    """The caller's request id when it is a plain short one, else a new one."""
    if incoming and _REQUEST_ID.fullmatch(incoming) and not _KEY_SHAPED.search(incoming):
        return incoming
    return new_request_id()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id:
            entry["request_id"] = request_id
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log(logger: logging.Logger, level: int, msg: str, **fields) -> None:
    """Log `msg` with structured fields (sizes, counts, ids; never payloads)."""
    logger.log(level, msg, extra={"fields": fields})
