"""The HTTP listener: aiohttp on the loop of image-input's grpc.aio server.

A `runtime.server.ServiceApp` companion: started once the gRPC server runs, with the target of
the private unix socket it also listens on, and stopped with it on SIGTERM (no new connections,
in-flight requests get `shutdown_grace_seconds`, as gRPC's in-flight calls do). With TLS
configured (runtime/tls.py) it serves HTTPS with the gRPC port's certificate, and requires client
certificates when the gRPC port does (mTLS).
"""

from __future__ import annotations

import logging

import grpc
from aiohttp import web

from faceanalysis.image_input.http import app, openapi
from faceanalysis.runtime import config, tls
from faceanalysis.runtime.channels import message_size_options
from faceanalysis.runtime.logging import log as log_fields
from faceanalysis.v1 import image_input_pb2_grpc

log = logging.getLogger(__name__)


def listen_host(bind_host: str) -> str | None:
    """aiohttp's host for FACEANALYSIS_BIND_HOST. `[::]` (gRPC's every address, IPv4 included)
    is None: asyncio binds an IPv6 socket for `::` with IPV6_V6ONLY, which would shut IPv4 out."""
    host = bind_host.strip("[]")
    return None if host in ("", "::") else host


class HttpListener:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.ssl = tls.server_ssl_context(settings)  # None: plain HTTP
        self._runner: web.AppRunner | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self, loopback_target: str) -> None:
        settings = self.settings
        # Plaintext is right here: the socket is in a directory only this process's user can enter.
        self._channel = grpc.aio.insecure_channel(loopback_target,
                                                  options=message_size_options(settings.image_message_bytes))
        api = app.HttpApi(image_input_pb2_grpc.FaceAnalysisStub(self._channel), settings.max_image_bytes,
                          openapi.document())
        self._runner = web.AppRunner(
            app.build(api, settings.max_image_bytes),
            access_log=None,  # the gRPC API logs each call, with the request id
            handler_cancellation=True,  # a client that goes away cancels its call, as on gRPC
            shutdown_timeout=settings.shutdown_grace_seconds,
            auto_decompress=False,  # a compressed body is refused (415), never inflated past the cap
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, listen_host(settings.bind_host), settings.http_port, ssl_context=self.ssl)
        await site.start()
        log_fields(log, logging.INFO, "http listening", http_port=settings.http_port,
                   scheme="https" if self.ssl else "http", tls=tls.describe(settings))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()
