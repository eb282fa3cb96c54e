"""The one way services dial each other.

- Targets are `dns:///name:port` and use round_robin, so a client spreads calls over
  every pod behind a headless Service instead of pinning one HTTP/2 connection.
- Retries apply to UNAVAILABLE only, with exponential backoff (gRPC's retry policy).
- Every call carries the request id of the call being served.
Callers pass deadlines (`timeout=`) on each call.
"""

from __future__ import annotations

import json

import grpc

from faceanalysis.runtime.logging import REQUEST_ID_HEADER, current_request_id

MAX_MESSAGE_BYTES_FLOOR = 16 * 1024 * 1024
# Aligned crops (at most CROP_SIZE^2 x 3 bytes each) and results: room for dozens of faces.
PEER_MESSAGE_BYTES = 64 * 1024 * 1024


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    limit = max(max_bytes, MAX_MESSAGE_BYTES_FLOOR)
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


def service_config(retries: int) -> dict:
    config: dict = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{}],  # every method of every service
                "retryPolicy": {
                    "maxAttempts": retries + 1,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return config


class _RequestIdInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    @staticmethod
    def _details(details):
        request_id = current_request_id()
        if not request_id:
            return details
        metadata = list(details.metadata or []) + [(REQUEST_ID_HEADER, request_id)]
        return details._replace(metadata=metadata)  # grpc hands interceptors a namedtuple

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def dial(target: str, *, retries: int = 3, max_message_bytes: int = MAX_MESSAGE_BYTES_FLOOR) -> grpc.Channel:
    """A channel to a peer; `target` like dns:///face-landmark:50051 (a bare host:port works too)."""
    options = [
        ("grpc.service_config", json.dumps(service_config(retries))),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        # Re-resolve DNS soon after a connection is closed by the server's max age.
        ("grpc.dns_min_time_between_resolutions_ms", 5000),
        # Reconnect to a restarted peer within seconds, not gRPC's default of up to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 3000),
        *message_size_options(max_message_bytes),
    ]
    channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _RequestIdInterceptor())
