"""The routes of the HTTP/JSON API and their handlers.

`ROUTES` is the one table of what the API serves: the aiohttp application is built from it, and
so is the OpenAPI document (openapi.py). Each API handler turns the HTTP request into the gRPC
request of its method, calls image-input's own gRPC API over the loopback channel with the
caller's `authorization` (or `x-api-key`, sent on as `authorization: Bearer <key>`) and
`x-request-id`, and answers with the reply in protobuf's JSON mapping, or with the error
(errors.py) the gRPC status maps to.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler  # sends 100 Continue; aiohttp is pinned
from google.protobuf.message import Message

from faceanalysis.image_input.http import errors, query, upload
from faceanalysis.image_input.http.errors import ApiError
from faceanalysis.runtime import auth, metrics, results, services
from faceanalysis.runtime import logging as fa_logging
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
# A file of the web page: one plain name, never a path (no `/`, no leading dot, so no `..`).
WEB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
REQUEST_ID = "request_id"  # key of the request's id in the aiohttp request
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # metric label values


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp's pattern, which is also OpenAPI's path template
    handler: str  # the HttpApi method that serves it
    operation_id: str
    summary: str
    # The reply: a protobuf message class (answered as its JSON mapping), or a media type.
    response: type[Message] | str
    # The protobuf request message whose fields are the query parameters, and fields left out.
    query: type[Message] | None = None
    query_exclude: tuple[str, ...] = ()
    upload: bool = False  # takes an image (upload.py)
    errors: tuple[int, ...] = ()  # the error statuses it answers besides 405 and 500
    needs_key: bool = True  # calls the gRPC API, so an API key when keys are on
    path_patterns: dict = field(default_factory=dict)  # path parameter -> regular expression
    description: str = ""


ID_PATTERN = {"analysis_id": results.ANALYSIS_ID.pattern}
API_ERRORS = (400, 401, 403, 503, 504)
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/analyses", "analyze", "analyzeImage", "Analyze one image", common_pb2.AnalysisResult,
          query=common_pb2.AnalysisOptions, upload=True, errors=(*API_ERRORS, 413, 415),
          description="The body is the image (JPEG, PNG, WebP, BMP or TIFF): its raw bytes, or a "
                      f"multipart/form-data form with the file in a field named `{upload.FIELD}`. The query "
                      "string carries the AnalysisOptions. gRPC: FaceAnalysis/AnalyzeImage."),
    Route("GET", "/v1/analyses", "list_analyses", "listAnalyses", "List stored analyses, newest first",
          image_input_pb2.ListAnalysesResponse, query=image_input_pb2.ListAnalysesRequest, errors=API_ERRORS,
          description="Pass `next_page_token` back as `page_token` for the next page. gRPC: ListAnalyses."),
    Route("GET", "/v1/analyses/{analysis_id}", "get_analysis", "getAnalysis", "Get a stored analysis",
          common_pb2.AnalysisResult, errors=(*API_ERRORS, 404), path_patterns=ID_PATTERN,
          description="gRPC: FaceAnalysis/GetAnalysis."),
    Route("DELETE", "/v1/analyses/{analysis_id}", "delete_analysis", "deleteAnalysis", "Delete a stored analysis",
          image_input_pb2.DeleteAnalysisResponse, errors=(*API_ERRORS, 404), path_patterns=ID_PATTERN,
          description="Answers 404 when neither Redis nor the archive held it. gRPC: FaceAnalysis/DeleteAnalysis."),
    Route("GET", "/openapi.json", "openapi", "getOpenApi", "This API's OpenAPI 3.1 document", "application/json",
          needs_key=False),
    Route("GET", "/", "index", "getWebPage", "The web page", "text/html", errors=(404,), needs_key=False),
    Route("GET", "/web/{name}", "web_file", "getWebFile", "A file of the web page (script, style, image)", "*/*",
          errors=(404,), needs_key=False, path_patterns={"name": WEB_NAME.pattern}),
)


# --- what every response gets: its request id, and a count in the metrics --------------------------

def request_id(request: web.BaseRequest) -> str:
    """The caller's x-request-id when it is a plain short one (runtime/logging.py), else a new one."""
    if REQUEST_ID not in request:
        request[REQUEST_ID] = fa_logging.accept_request_id(request.headers.get(fa_logging.REQUEST_ID_HEADER))
    return request[REQUEST_ID]


def finish(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    response.headers[fa_logging.REQUEST_ID_HEADER] = request_id(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    resource = getattr(request.match_info.route, "resource", None)
    route = resource.canonical if resource is not None else "unmatched"
    method = request.method if request.method in METHODS else "other"
    metrics.HTTP_REQUESTS.labels(services.IMAGE_INPUT.name, route, method, str(response.status)).inc()
    return response


@web.middleware
async def envelope(request: web.Request, handler) -> web.StreamResponse:
    """Every answer, errors of aiohttp's own included, in the API's shape and with its request id."""
    token = fa_logging.set_request_id(request_id(request))
    try:
        response = await handler(request)
    except ApiError as err:
        response = err.response()
    except web.HTTPException as exc:
        response = errors.from_http(exc).response()
    except Exception:  # noqa: BLE001 - logged with its traceback, answered as a 500
        log.exception("HTTP request failed")
        response = ApiError(500, f"internal error; request id {request_id(request)} is in the server's log").response()
    finally:
        fa_logging.reset_request_id(token)
    return finish(request, response)


def forwarded(request: web.BaseRequest) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata of a request: its request id and credentials, as the gRPC API takes them.

    `x-api-key: <key>` becomes `authorization: Bearer <key>`; sending both is two credentials,
    which the gRPC API refuses as malformed. A value gRPC metadata cannot carry (not printable
    ASCII) is sent as an unusable credential, so it is refused rather than dropped."""
    metadata = [(fa_logging.REQUEST_ID_HEADER, request_id(request))]
    credentials = request.headers.getall(auth.HEADER, [])
    credentials += [f"Bearer {key.strip()}" for key in request.headers.getall("x-api-key", [])]
    for value in credentials:
        metadata.append((auth.HEADER, value if value.isascii() and value.isprintable() else "unusable"))
    return tuple(metadata)


def json_answer(message: Message) -> web.Response:
    return web.Response(text=results.to_json(message), content_type="application/json")


class HttpApi:
    """The handlers; `stub` is image-input's own FaceAnalysis API on the loopback channel."""

    def __init__(self, stub: image_input_pb2_grpc.FaceAnalysisStub, max_image_bytes: int, openapi: dict):
        self.stub, self.max_image_bytes, self._openapi = stub, max_image_bytes, openapi

    async def _call(self, method: str, message: Message, request: web.BaseRequest):
        try:
            return await getattr(self.stub, method)(message, metadata=forwarded(request))
        except grpc.aio.AioRpcError as err:
            raise errors.from_rpc(err) from None

    async def expect_upload(self, request: web.Request):
        """`Expect: 100-continue`: refuse from the headers (413, 415, a bad option) before the client
        sends the body; otherwise let it send."""
        try:
            upload.check(request, self.max_image_bytes)
            query.parse(request.query, common_pb2.AnalysisOptions())
        except ApiError as err:
            return finish(request, err.response())
        return await _default_expect_handler(request)

    async def analyze(self, request: web.Request) -> web.Response:
        upload.check(request, self.max_image_bytes)  # 415 and 413 first: nothing read yet
        options = query.parse(request.query, common_pb2.AnalysisOptions())
        image = await upload.read(request, self.max_image_bytes)
        reply = await self._call("AnalyzeImage", image_input_pb2.AnalyzeImageRequest(image=image, options=options),
                                 request)
        return json_answer(reply.result)

    async def list_analyses(self, request: web.Request) -> web.Response:
        return json_answer(await self._call("ListAnalyses",
                                            query.parse(request.query, image_input_pb2.ListAnalysesRequest()), request))

    async def get_analysis(self, request: web.Request) -> web.Response:
        analysis_id = request.match_info["analysis_id"]
        reply = await self._call("GetAnalysis", image_input_pb2.GetAnalysisRequest(analysis_id=analysis_id), request)
        return json_answer(reply.result)

    async def delete_analysis(self, request: web.Request) -> web.Response:
        analysis_id = request.match_info["analysis_id"]
        reply = await self._call("DeleteAnalysis", image_input_pb2.DeleteAnalysisRequest(analysis_id=analysis_id),
                                 request)
        if not reply.deleted:
            raise ApiError(404, f"analysis {analysis_id} not found (nothing was held to delete)", "NOT_FOUND")
        return json_answer(reply)

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(self._openapi)

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def web_file(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    @staticmethod
    def _file(name: str) -> web.StreamResponse:
        path = WEB_DIR / name
        if not WEB_NAME.match(name) or not path.is_file():
            raise ApiError(404, f"no web file {name[:100]!r}", "NOT_FOUND")
        # Revalidated on every load (ETag / Last-Modified): a new release's page is seen at once.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def build(api: HttpApi, max_image_bytes: int) -> web.Application:
    # aiohttp's own body cap, for any read of a whole body; uploads are read by upload.py under theirs.
    app = web.Application(middlewares=[envelope], client_max_size=max_image_bytes + upload.MULTIPART_OVERHEAD)
    for route in ROUTES:
        extra = {"expect_handler": api.expect_upload} if route.upload else {}
        for method in served_methods(route):
            app.router.add_route(method, route.path, getattr(api, route.handler), **extra)
    return app


def served_methods(route: Route) -> tuple[str, ...]:
    """Every GET also answers HEAD (RFC 9110 9.3.2), as aiohttp's add_get(allow_head=True) does: the same
    handler, so the same status and headers; aiohttp leaves the body out and keeps its Content-Length."""
    return ("GET", "HEAD") if route.method == "GET" else (route.method,)
