"""What a cached result depends on, besides the image: the models and settings that made it.

Every answer of face-landmark and face-attributes names its models (file, sha256, and the
parameters that shape them: margin, precision, detection threshold and sizes, crop size and the
face size crops are shrunk to). The cache key is the image's sha256 plus a digest of that list,
so new weights, an int8 copy, another margin, detector, threshold or crop size miss the cache
instead of serving old answers for the result TTL. The release version joins them, for changes of the code itself.

The request's options that change what is computed join it too (runtime/options.py): only the
models a request's actions need answer it, with its own detection threshold and min_face as their
parameters, so the digest is of those models as they ran (the effective threshold and min_face,
whether the request's or the server's); and the actions, as a sorted set, are appended unless all
four were asked for (so such keys are as they were before options existed). skip_cache and
no_store only change how a result is handled and are not part of it.

- A result is stored under the digest of the models it was actually made with.
- A lookup happens before the peers are called, so it uses the models the peers serve now, asked
  with DescribeModels and kept for FACEANALYSIS_CACHE_MODELS_REFRESH_SECONDS (30), as the request's
  options would run them: after a rollout, old answers can be served for at most that long. While
  the peers cannot say (starting, down), the lookup is skipped: the cache is an optimisation, never
  a reason to fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import time
from collections.abc import Iterable

from faceanalysis.runtime.channels import Peer, PeerError
from faceanalysis.runtime.options import Options
from faceanalysis.v1 import common_pb2

RELEASE = importlib.metadata.version("faceanalysis")
ATTRIBUTES = "face-attributes"  # the peer whose models need crops
DESCRIBE_SECONDS = 2.0


def digest(models: Iterable[common_pb2.ModelInfo]) -> str:
    """A short, order-independent digest of models and their parameters, and of this release."""
    canonical = sorted(
        (m.name, m.task, m.file, m.sha256, sorted(m.parameters.items())) for m in models)
    return hashlib.sha256(json.dumps([RELEASE, canonical]).encode()).hexdigest()[:16]


def cache_key(image_sha256: str, models_digest: str, options: Options | None = None) -> str:
    """The image, the models that answer it (digest) and, where they matter, the options."""
    token = options.cache_token() if options is not None else ""
    return f"{image_sha256}:{models_digest}" + (f":{token}" if token else "")


class Fingerprint:
    """The models the peers serve now, asked again after `refresh_seconds`."""

    def __init__(self, peers: Iterable[Peer], refresh_seconds: float):
        self.peers, self.refresh_seconds = list(peers), refresh_seconds
        self._models: list[common_pb2.ModelInfo] | None = None
        self.described: dict[str, list[common_pb2.ModelInfo]] = {}  # peer name -> its models, last asked
        self._asked = float("-inf")
        self._lock = asyncio.Lock()  # one DescribeModels round at a time, not one per waiting call

    async def current(self, options: Options = Options(), face_size: int | None = None) -> str | None:
        """The digest of the models that would answer a request with `options` (crops shrunk to
        `face_size`) now, or None when a peer cannot describe its models right now."""
        models = await self._current_models()
        return None if models is None else digest(options.answering_models(models, face_size))

    async def _current_models(self) -> list[common_pb2.ModelInfo] | None:
        if time.monotonic() - self._asked < self.refresh_seconds:
            return self._models
        async with self._lock:
            if time.monotonic() - self._asked < self.refresh_seconds:
                return self._models  # refreshed while this call waited
            return await self._ask()

    async def _ask(self) -> list[common_pb2.ModelInfo] | None:
        described = {}
        try:
            for peer in self.peers:
                answer = await peer.call("DescribeModels", common_pb2.DescribeModelsRequest(),
                                         timeout=DESCRIBE_SECONDS)
                described[peer.name] = list(answer.models)
        except PeerError:
            return None  # asked again on the next call
        self.described = described
        self._models = [m for models in described.values() for m in models]
        self._asked = time.monotonic()
        return self._models

    async def face_size(self, options: Options) -> int | None:
        """The longest face side the attribute models that answer `options` need in a crop (the
        largest of their face_size parameters); None when no attribute is wanted or face-attributes
        has not described its models (face-landmark then sends crops at its CROP_SIZE)."""
        if not options.attribute_tasks or await self._current_models() is None:
            return None
        sizes = [int(float(m.parameters["face_size"])) for m in options.answering_models(self.described.get(
            ATTRIBUTES, ())) if "face_size" in m.parameters]
        return max(sizes, default=None)

    def stored_digest(self, models: list[common_pb2.ModelInfo], skipped: Iterable[str] = (),
                      options: Options = Options()) -> str:
        """The digest to store a result under: the models that made it, plus, for each peer in
        `skipped` (face-attributes, for a photo without faces or a request without attributes),
        the models that peer would have used for `options`, as last described; so a later lookup
        of the same photo with the same options matches."""
        extra = options.answering_models(m for name in skipped for m in self.described.get(name, ()))
        return digest([*models, *extra])
