"""What a cached result depends on, besides the image: the models and settings that made it.

Every answer of face-landmark and face-attributes names its models (file, sha256, and the
parameters that shape them: margin, precision, detection threshold and sizes, crop size). The
cache key is the image's sha256 plus a digest of that list, so new weights, an int8 copy, another
margin, detector, threshold or crop size miss the cache instead of serving old answers for the
result TTL. The release version joins them, for changes of the code itself. No request option
changes what is computed (skip_cache and no_store only change how a result is handled); an option
that does must join the key.

- A result is stored under the digest of the models it was actually made with.
- A lookup happens before the peers are called, so it uses the digest of the models the peers
  serve now, asked with DescribeModels and kept for FACEANALYSIS_CACHE_MODELS_REFRESH_SECONDS
  (30): after a rollout, old answers can be served for at most that long. While the peers cannot say (starting, down), the
  lookup is skipped: the cache is an optimisation, never a reason to fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import time
from collections.abc import Iterable

from faceanalysis.runtime.channels import Peer, PeerError
from faceanalysis.v1 import common_pb2

RELEASE = importlib.metadata.version("faceanalysis")
DESCRIBE_SECONDS = 2.0


def digest(models: Iterable[common_pb2.ModelInfo]) -> str:
    """A short, order-independent digest of models and their parameters, and of this release."""
    canonical = sorted(
        (m.name, m.task, m.file, m.sha256, sorted(m.parameters.items())) for m in models)
    return hashlib.sha256(json.dumps([RELEASE, canonical]).encode()).hexdigest()[:16]


def cache_key(image_sha256: str, models_digest: str) -> str:
    return f"{image_sha256}:{models_digest}"


class Fingerprint:
    """The digest of the models the peers serve now, asked again after `refresh_seconds`."""

    def __init__(self, peers: Iterable[Peer], refresh_seconds: float):
        self.peers, self.refresh_seconds = list(peers), refresh_seconds
        self._digest: str | None = None
        self.described: dict[str, list[common_pb2.ModelInfo]] = {}  # peer name -> its models, last asked
        self._asked = float("-inf")
        self._lock = asyncio.Lock()  # one DescribeModels round at a time, not one per waiting call

    async def current(self) -> str | None:
        """The digest, or None when a peer cannot describe its models right now."""
        if time.monotonic() - self._asked < self.refresh_seconds:
            return self._digest
        async with self._lock:
            if time.monotonic() - self._asked < self.refresh_seconds:
                return self._digest  # refreshed while this call waited
            return await self._ask()

    async def _ask(self) -> str | None:
        described = {}
        try:
            for peer in self.peers:
                answer = await peer.call("DescribeModels", common_pb2.DescribeModelsRequest(),
                                         timeout=DESCRIBE_SECONDS)
                described[peer.name] = list(answer.models)
        except PeerError:
            return None  # asked again on the next call
        self.described = described
        self._digest = digest(m for models in described.values() for m in models)
        self._asked = time.monotonic()
        return self._digest

    def stored_digest(self, models: list[common_pb2.ModelInfo], skipped: Iterable[str] = ()) -> str:
        """The digest to store a result under: the models that made it, plus, for each peer in
        `skipped` (face-attributes, for a photo without faces), the models that peer would have
        used, as last described; so a later lookup of the same photo matches."""
        extra = [m for name in skipped for m in self.described.get(name, ())]
        return digest([*models, *extra])
