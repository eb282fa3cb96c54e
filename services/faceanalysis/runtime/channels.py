"""The one way services dial each other, and call them.

- Targets are `dns:///name:port` and use round_robin, so a client spreads calls over every pod
  behind a headless Service instead of pinning one HTTP/2 connection.
- Retries are ours, not gRPC's: gRPC stops retrying once a request exceeds its 256 KiB retry
  buffer, which every image does. `Peer.call` tries again on UNAVAILABLE (and on a busy peer's
  RESOURCE_EXHAUSTED) with backoff for `peer_retry_seconds`, within the caller's deadline, so a
  peer that restarts in a few seconds fails nothing. Every method we call is idempotent.
- Every call carries the request id of the call being served, and a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc

from faceanalysis.runtime import metrics, work
from faceanalysis.runtime.logging import REQUEST_ID_HEADER, current_request_id, log as log_fields

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES_FLOOR = 16 * 1024 * 1024
# Aligned crops (at most CROP_SIZE^2 x 3 bytes each) and results: room for dozens of faces.
PEER_MESSAGE_BYTES = 64 * 1024 * 1024
INITIAL_BACKOFF, MAX_BACKOFF = 0.1, 1.0


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    limit = max(max_bytes, MAX_MESSAGE_BYTES_FLOOR)
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES_FLOOR) -> list[tuple[str, object]]:
    return [
        ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
        ("grpc.enable_retries", 0),  # see the module docstring: Peer.call retries
        # Re-resolve DNS soon after a connection is closed by the server's max age.
        ("grpc.dns_min_time_between_resolutions_ms", 5000),
        # Reconnect to a restarted peer within a second, not gRPC's default of up to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Notice a peer that vanished without closing its connections (a killed node).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *message_size_options(max_message_bytes),
    ]


def dial(target: str, *, max_message_bytes: int = MAX_MESSAGE_BYTES_FLOOR,
         credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """An asyncio channel to a peer; `target` like dns:///face-landmark:50051. With `credentials`
    (runtime.tls.peer_credentials) it speaks TLS and the peer's certificate must carry the
    target's host name."""
    options = channel_options(max_message_bytes)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


class PeerError(Exception):
    """A failed call to a peer, as the client of the public API should see it."""

    def __init__(self, code: grpc.StatusCode, message: str, *, peer_code: grpc.StatusCode | None = None,
                 details: str = "", overloaded: bool = False):
        super().__init__(message)
        self.code, self.message, self.overloaded = code, message, overloaded
        # What the peer itself answered (NOT_FOUND from data-storage is an answer, not a failure).
        self.peer_code, self.details = peer_code or code, details


# Statuses by which a peer refuses input; whose input it was decides who is at fault.
INPUT_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


def describe(peer: str, err: grpc.RpcError, *, client_input: bool = False) -> PeerError:
    """Map a peer's status to the party at fault. A peer being down or busy is not the client's
    fault. A peer refusing the client's own bytes (face-landmark decoding an upload that only
    looked valid from its header) is the client's: its status and words pass through. A peer
    refusing what image-input built is ours: INTERNAL."""
    code, details = err.code(), err.details()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return PeerError(code, f"{peer} is unavailable ({code.name}): {details}")
    if work.is_overloaded(err):
        return PeerError(code, f"{peer} is at capacity: {details}", overloaded=True)
    if code == grpc.StatusCode.CANCELLED:
        return PeerError(code, f"call to {peer} was cancelled")
    if client_input and code in INPUT_REFUSALS:
        return PeerError(code, details, details=details)
    return PeerError(grpc.StatusCode.INTERNAL, f"{peer} failed ({code.name}): {details}", peer_code=code,
                     details=details)


def _retryable(err: grpc.RpcError) -> bool:
    return err.code() == grpc.StatusCode.UNAVAILABLE or work.is_overloaded(err)


def remaining(deadline: float | None, cap: float) -> float:
    """Seconds left before `deadline` (time.monotonic()), at most `cap`."""
    if deadline is None:
        return cap
    return min(cap, deadline - time.monotonic())


class Peer:
    """Calls to one peer service: deadlines, retries, request ids and error mapping."""

    def __init__(self, name: str, stub, *, timeout: float, retry_seconds: float):
        self.name, self.stub = name, stub
        self.timeout, self.retry_seconds = timeout, retry_seconds

    async def call(self, method: str, request, deadline: float | None = None, *, timeout: float | None = None,
                   client_input: bool = False):
        """`stub.method(request)` within `deadline`; raises PeerError. `client_input`: the request
        carries the client's bytes as they came, so the peer's refusal of them is the client's."""
        cap = self.timeout if timeout is None else timeout
        request_id = current_request_id()
        metadata = ((REQUEST_ID_HEADER, request_id),) if request_id else None
        started = time.monotonic()
        backoff = INITIAL_BACKOFF
        while True:
            budget = remaining(deadline, cap)
            if budget <= 0:
                raise PeerError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no time left to call {self.name}")
            try:
                return await getattr(self.stub, method)(request, timeout=budget, metadata=metadata)
            except grpc.aio.AioRpcError as err:
                waited = time.monotonic() - started
                if not _retryable(err) or waited + backoff > self.retry_seconds or budget <= backoff:
                    failure = describe(self.name, err, client_input=client_input)
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        log_fields(log, logging.WARNING, "peer unavailable", peer=self.name, method=method,
                                   waited_seconds=round(waited, 2), error=err.details())
                    raise failure from None
                metrics.PEER_RETRIES.labels(self.name, err.code().name).inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
