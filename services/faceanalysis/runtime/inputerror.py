"""The error a service answers for input that no retry will fix, in a module of its own: options
are checked in face-attributes too, whose image has no Pillow (imagecodec needs it)."""

from __future__ import annotations

import grpc


class InputError(Exception):
    """A refused upload or option: gRPC status code plus a message for a person."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message
