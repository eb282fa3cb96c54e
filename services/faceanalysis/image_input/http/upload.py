"""The image of a POST /v1/analyses, read under the byte cap.

Two ways to send it: the raw bytes as the body (Content-Type image/* or application/octet-stream),
or a multipart/form-data form with the file in a field named `image` (what a browser's form or
`curl -F image=@photo.jpg` sends).

The cap (FACEANALYSIS_MAX_IMAGE_BYTES) is enforced before the body is held: a Content-Length over
it is refused before a byte is read (and, for a client that sent `Expect: 100-continue`, before
the client sends one), and a body without a length (chunked) is counted as it arrives and
refused the moment it passes the cap. aiohttp then reads and drops what the client still sends,
for a bounded time, so that the client gets to read the 413.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, web
from aiohttp.web_protocol import RequestPayloadError

from faceanalysis.image_input.http.errors import ApiError

FIELD = "image"
RAW_TYPES = ("application/octet-stream",)  # and image/*
MULTIPART = "multipart/form-data"
# What a form adds around the file: boundaries and part headers (a browser's are a few hundred bytes).
MULTIPART_OVERHEAD = 64 * 1024
CHUNK = 256 * 1024
TYPES_ACCEPTED = (f"image/* or application/octet-stream with the image bytes as the body, or {MULTIPART} "
                  f"with the file in a field named `{FIELD}`")


def too_large(cap: int, size: int | None = None) -> ApiError:
    got = f"is {size} bytes" if size is not None else "is over the limit"
    return ApiError(413, f"the upload {got}; the limit is {cap} bytes (FACEANALYSIS_MAX_IMAGE_BYTES)",
                    "RESOURCE_EXHAUSTED")


def check(request: web.BaseRequest, cap: int) -> None:
    """What can be refused from the headers alone: 415 for a Content-Type or Content-Encoding the
    API does not take, 413 for a Content-Length over the cap."""
    kind = request.content_type  # aiohttp: application/octet-stream when the header is absent
    if kind == MULTIPART:
        limit = cap + MULTIPART_OVERHEAD
    elif kind.startswith("image/") or kind in RAW_TYPES:
        limit = cap
    else:
        raise ApiError(415, f"Content-Type {kind} is not accepted; send {TYPES_ACCEPTED}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(415, f"Content-Encoding {encoding[:40]} is not accepted; send the image bytes as they are "
                            "(JPEG, PNG and WebP are compressed already)")
    if request.content_length is not None and request.content_length > limit:
        raise too_large(cap, request.content_length)


async def _read(read_chunk, cap: int) -> bytes:
    """Every chunk `read_chunk()` gives until it gives b"", refused once they add up to more than `cap`."""
    chunks, size = [], 0
    while chunk := await read_chunk():
        size += len(chunk)
        if size > cap:
            raise too_large(cap)
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_image(request: web.BaseRequest, cap: int) -> bytes:
    form = await request.multipart()
    image = None
    while (part := await form.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != FIELD:
            name = getattr(part, "name", None)
            raise ApiError(400, f"unexpected form field {str(name)[:40]!r}: send only the photo, in a field named "
                                f"`{FIELD}` (options go in the query string)")
        if image is not None:
            raise ApiError(400, f"the form holds more than one `{FIELD}`: send one photo per request")
        image = await _read(lambda: part.read_chunk(CHUNK), cap)
    if image is None:
        raise ApiError(400, f"the form holds no field named `{FIELD}`: send the photo as `{FIELD}`")
    return image


async def read(request: web.BaseRequest, cap: int) -> bytes:
    """The uploaded image's bytes; ApiError (400, 413, 415) when there is none or it is too large."""
    check(request, cap)
    try:
        if request.content_type != MULTIPART:
            return await _read(lambda: request.content.read(CHUNK), cap)
        try:
            return await _form_image(request, cap)
        except (ValueError, AssertionError) as err:  # aiohttp's parser: no boundary, broken part headers
            raise ApiError(400, f"malformed {MULTIPART} body: {err}") from None
    except (RequestPayloadError, ConnectionResetError) as err:
        raise ApiError(400, f"the upload did not arrive whole: {err}") from None
