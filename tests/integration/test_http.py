"""The HTTP/JSON API of image-input, against the real local stack.

Every call goes over a real socket to the image-input process (httpx as the client), and every
JSON answer, success or error, is validated against the schema the server's own /openapi.json
gives for its route and status. Extra image-input processes, wired to the shared stack's peers,
cover what the shared one cannot show: API keys (401, 403), peers that are down and a full
admission line (503), and HTTPS with the gRPC port's certificate.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from faceanalysis.cli.stack import free_port
from faceanalysis.image_input.http import app as http_app, openapi
from faceanalysis.runtime import auth, results
from faceanalysis.v1 import common_pb2, image_input_pb2, image_input_pb2_grpc
from tests.certs import CA
from tests.hostile import HOSTILE, obama_jpeg
from tests.integration.edge import large_photo
from tests.integration.test_bad_input import scrape
from tests.support import ROOT, image, start_image_input

MiB = 1024 * 1024
CAP = 20 * MiB  # FACEANALYSIS_MAX_IMAGE_BYTES' default
SIX_MB = 6 * MiB
ANALYSES = "/v1/analyses"
ONE = "/v1/analyses/{analysis_id}"
MISSING_ID = "0" * 32
# Fields that differ between two analyses of the same image, whichever API asked.
PER_CALL = ("analysis_id", "timings", "created_at", "stored", "cached", "storage_error")


# --- the client, and the check of every answer against the OpenAPI document ------------------------

@pytest.fixture(scope="module")
def document(local_stack) -> dict:
    answer = httpx.get(local_stack.http_url + "/openapi.json", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    return answer.json()


def check_schema(document: dict, route: str, method: str, answer: httpx.Response) -> None:
    """The answer's JSON against the schema /openapi.json gives for its route, method and status."""
    responses = document["paths"][route][method.lower()]["responses"]
    documented = responses.get(str(answer.status_code)) or responses["default"]
    (media, content), = documented["content"].items()
    if media == "*/*":
        return
    assert answer.headers["content-type"].split(";")[0] == media, answer.headers["content-type"]
    if media != "application/json":
        return
    schema = {**content["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER) \
        .validate(answer.json())


class Api:
    """httpx against one image-input's HTTP port; each JSON answer is checked against the document."""

    def __init__(self, base: str, document: dict, **client):
        self.client = httpx.Client(base_url=base, timeout=120, **client)
        self.document = document

    def call(self, method: str, route: str, path: str | None = None, **kw) -> httpx.Response:
        answer = self.client.request(method, path or route, **kw)
        assert answer.headers.get("x-request-id"), "every answer carries x-request-id"
        if route in self.document["paths"] and method.lower() in self.document["paths"][route]:
            check_schema(self.document, route, method, answer)
        return answer

    def analyze(self, data: bytes, content_type: str = "image/jpeg", params=None, **kw) -> httpx.Response:
        headers = {"content-type": content_type, **kw.pop("headers", {})}
        return self.call("POST", ANALYSES, content=data, headers=headers, params=params, **kw)


@pytest.fixture(scope="module")
def api(local_stack, document):
    client = Api(local_stack.http_url, document)
    yield client
    client.client.close()


def error_of(answer: httpx.Response, status: int, code: str, *words: str) -> str:
    assert answer.status_code == status, answer.text[:500]
    error = answer.json()["error"]
    assert (error["status"], error["code"]) == (status, code), error
    for word in words:
        assert word in error["message"], error["message"]
    return error["message"]


# --- the OpenAPI document -----------------------------------------------------------------------

def test_openapi_document_is_valid_and_matches_the_routes(document):
    validate_spec(document)
    assert document["openapi"].startswith("3.1")
    assert document == json.loads(json.dumps(openapi.document()))  # what the code builds, served as is
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    server = http_app.build(http_app.HttpApi(None, CAP, document), CAP)
    served = {(r.resource.canonical, r.method) for r in server.router.routes()}
    assert documented == {(r.path, r.method) for r in http_app.ROUTES}
    # The server answers HEAD beside every GET, which the document says once rather than per path (openapi.py).
    heads = {(path, "HEAD") for path, method in documented if method == "GET"}
    assert served == documented | heads
    assert "HEAD" in document["info"]["description"]


def test_openapi_schemas_follow_the_protos(document):
    schemas = document["components"]["schemas"]
    result = schemas["AnalysisResult"]
    assert set(result["properties"]) == {f.name for f in common_pb2.AnalysisResult.DESCRIPTOR.fields}
    assert result["properties"]["created_at"] == {"type": "string", "format": "date-time"}
    assert result["properties"]["faces"] == {"type": "array", "items": {"$ref": "#/components/schemas/Face"}}
    assert schemas["EmotionPrediction"]["properties"]["scores"]["type"] == "object"
    assert schemas["Gender"]["enum"] == ["GENDER_UNSPECIFIED", "GENDER_WOMAN", "GENDER_MAN"]
    # always printed (no presence) -> required; message fields only when set
    assert {"analysis_id", "faces", "stored"} <= set(result["required"]) and "image" not in result["required"]
    post = document["paths"][ANALYSES]["post"]
    actions = next(p for p in post["parameters"] if p["name"] == "actions")
    assert actions["schema"]["items"]["enum"] == ["landmarks", "age", "gender", "emotion"]
    assert set(post["requestBody"]["content"]) == {"image/*", "application/octet-stream", "multipart/form-data"}


# --- every endpoint ------------------------------------------------------------------------------

def test_post_raw_get_list_delete(api, local_stack):
    data = image("face_recognition/two_people.jpg").read_bytes()
    posted = api.analyze(data, params={"skip_cache": "true"})
    assert posted.status_code == 200, posted.text[:500]
    result = posted.json()
    assert result["stored"] and len(result["faces"]) == 2
    assert result["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    analysis_id = result["analysis_id"]

    got = api.call("GET", ONE, f"{ANALYSES}/{analysis_id}")
    assert got.status_code == 200 and got.json()["analysis_id"] == analysis_id
    assert got.json()["faces"] == result["faces"]

    listed = api.call("GET", ANALYSES, params={"page_size": 500})
    assert listed.status_code == 200
    summary = {a["analysis_id"]: a for a in listed.json()["analyses"]}[analysis_id]
    assert summary == {"analysis_id": analysis_id, "face_count": 2, "image_sha256": result["image"]["sha256"]}

    deleted = api.call("DELETE", ONE, f"{ANALYSES}/{analysis_id}")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True}
    assert not (local_stack.archive_dir / f"{analysis_id}.json").exists()
    error_of(api.call("GET", ONE, f"{ANALYSES}/{analysis_id}"), 404, "NOT_FOUND")
    error_of(api.call("DELETE", ONE, f"{ANALYSES}/{analysis_id}"), 404, "NOT_FOUND", analysis_id)


def test_post_multipart_form(api):
    data = image("face_recognition/obama.jpg").read_bytes()
    answer = api.call("POST", ANALYSES, files={"image": ("obama.jpg", data, "image/jpeg")}, params={"no_store": "true"})
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.json()["faces"]) == 1 and not answer.json()["stored"]
    # a form part without a file name, and application/octet-stream as the raw type
    assert api.call("POST", ANALYSES, files={"image": (None, data)}, params={"no_store": "1"}).status_code == 200
    assert api.analyze(data, "application/octet-stream", params={"no_store": "true"}).status_code == 200


def test_list_pages(api):
    data = image("misc/astronaut.png").read_bytes()
    for _ in range(3):
        assert api.analyze(data, "image/png", params={"skip_cache": "true"}).status_code == 200
    first = api.call("GET", ANALYSES, params={"page_size": 2}).json()
    assert len(first["analyses"]) == 2 and first["next_page_token"]
    second = api.call("GET", ANALYSES, params={"page_size": 2, "page_token": first["next_page_token"]}).json()
    assert second["analyses"]
    assert not {a["analysis_id"] for a in first["analyses"]} & {a["analysis_id"] for a in second["analyses"]}


def test_six_mb_upload(api, tmp_path):
    photo = large_photo(image("face_recognition/two_people.jpg"), tmp_path / "two_people.jpg", SIX_MB)
    data = photo.read_bytes()
    assert len(data) >= SIX_MB
    answer = api.analyze(data, params={"skip_cache": "true", "no_store": "true"})
    assert answer.status_code == 200, answer.text[:500]
    result = answer.json()
    assert result["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(result["faces"]) == 2  # Obama and Biden
    form = api.call("POST", ANALYSES, files={"image": ("big.jpg", data, "image/jpeg")},
                    params={"skip_cache": "true", "no_store": "true"})
    assert form.status_code == 200 and len(form.json()["faces"]) == 2


def test_json_result_equals_the_grpc_result(api, local_stack):
    data = image("misc/t1.jpg").read_bytes()
    options = common_pb2.AnalysisOptions(skip_cache=True, no_store=True, min_face=40,
                                         actions=[common_pb2.ACTION_AGE, common_pb2.ACTION_GENDER])
    with grpc.insecure_channel(local_stack.target("image-input")) as channel:
        by_grpc = image_input_pb2_grpc.FaceAnalysisStub(channel).AnalyzeImage(
            image_input_pb2.AnalyzeImageRequest(image=data, options=options), timeout=120).result
    by_http = api.analyze(data, params={"skip_cache": "true", "no_store": "true", "min_face": "40",
                                        "actions": "age,gender"})
    assert by_http.status_code == 200, by_http.text[:500]
    expected = json.loads(results.to_json(by_grpc))
    got = by_http.json()
    for name in PER_CALL:
        expected.pop(name, None), got.pop(name, None)
    assert got == expected
    assert len(got["faces"]) >= 1
    # repeated parameters and full enum names read the same as a comma list
    again = api.call("POST", ANALYSES, content=data, headers={"content-type": "image/jpeg"},
                     params=[("actions", "ACTION_AGE"), ("actions", "Gender"), ("skip_cache", "true"),
                             ("no_store", "true"), ("min_face", "40")])
    assert again.status_code == 200 and len(again.json()["faces"]) == len(got["faces"])


# --- request ids and metrics ---------------------------------------------------------------------

def test_request_id_is_echoed_and_reaches_the_grpc_logs(api, local_stack):
    answer = api.analyze(obama_jpeg(), params={"no_store": "true"}, headers={"x-request-id": "http-test-4711"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "http-test-4711"
    log = (local_stack.log_dir / "image-input.log").read_text()
    assert any('"request_id": "http-test-4711"' in line and '"analyzed"' in line for line in log.splitlines())
    # made up when absent or unusable; errors carry one too
    made = api.call("GET", ONE, f"{ANALYSES}/nope").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    odd = api.call("GET", ANALYSES, headers={"x-request-id": "x" * 500})
    assert odd.status_code == 200 and odd.headers["x-request-id"] != "x" * 500
    assert api.call("GET", "/nowhere").headers["x-request-id"]


def test_http_analysis_shows_in_grpc_metrics(api, local_stack):
    url = local_stack.metrics_urls["image-input"]
    grpc_ok = ("faceanalysis_grpc_requests_total",
               (("code", "OK"), ("method", "AnalyzeImage"), ("service", "image-input")))
    http_ok = ("faceanalysis_http_requests_total",
               (("code", "200"), ("method", "POST"), ("route", ANALYSES), ("service", "image-input")))
    refused = ("faceanalysis_http_requests_total",
               (("code", "415"), ("method", "POST"), ("route", ANALYSES), ("service", "image-input")))
    before = scrape(url)
    assert api.analyze(obama_jpeg(), params={"no_store": "true"}).status_code == 200
    assert api.analyze(b"hello", "text/plain").status_code == 415
    after = scrape(url)
    assert after[grpc_ok] == before.get(grpc_ok, 0) + 1
    assert after[http_ok] == before.get(http_ok, 0) + 1
    assert after[refused] == before.get(refused, 0) + 1


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["empty", "text", "jpeg truncated halfway", "png with a bad checksum", "gif",
                                  "1x1 png", "png bomb 20000x20000", "jpeg sof 65500x65500"])
def test_bad_images(api, kind):
    make, code, words = HOSTILE[kind]
    status = 400 if code == grpc.StatusCode.INVALID_ARGUMENT else 413
    error_of(api.analyze(make()), status, code.name, words)


@pytest.mark.parametrize("params, words", [
    ({"actions": "age,nose"}, ["actions", "nose", "landmarks, age, gender, emotion"]),
    ({"detection_threshold": "high"}, ["detection_threshold", "number"]),
    ({"detection_threshold": "nan"}, ["detection_threshold"]),
    ({"min_face": "1.5"}, ["min_face", "whole number"]),
    ({"min_face": "99999999999"}, ["min_face", "2147483647"]),
    ({"skip_cache": "maybe"}, ["skip_cache", "true or false"]),
    ({"action": "age"}, ["unknown query parameter", "'action'", "actions"]),
    ([("min_face", "40"), ("min_face", "50")], ["min_face", "2 times"]),
    # well-formed but out of range: the gRPC API's own check, its message passed on
    ({"detection_threshold": "1.5"}, ["detection_threshold", "(0, 1)"]),
    ({"min_face": "-1"}, ["min_face"]),
])
def test_bad_options(api, params, words):
    error_of(api.analyze(obama_jpeg(), params=params), 400, "INVALID_ARGUMENT", *words)


def test_bad_ids_and_list_parameters(api):
    for bad in ("nope", "0" * 31, "G" * 32, "..%2F..%2Fetc%2Fpasswd"):
        error_of(api.call("GET", ONE, f"{ANALYSES}/{bad}"), 400, "INVALID_ARGUMENT", "analysis_id")
        error_of(api.call("DELETE", ONE, f"{ANALYSES}/{bad}"), 400, "INVALID_ARGUMENT", "analysis_id")
    error_of(api.call("GET", ONE, f"{ANALYSES}/{MISSING_ID}"), 404, "NOT_FOUND")
    error_of(api.call("GET", ANALYSES, params={"page_size": "ten"}), 400, "INVALID_ARGUMENT", "page_size")
    error_of(api.call("GET", ANALYSES, params={"page_token": "!!not-a-token"}), 400, "INVALID_ARGUMENT")


def test_bad_forms(api):
    data = obama_jpeg()
    error_of(api.call("POST", ANALYSES, files={"photo": ("a.jpg", data)}), 400, "INVALID_ARGUMENT", "photo", "image")
    error_of(api.call("POST", ANALYSES, files=[("image", ("a.jpg", data)), ("image", ("b.jpg", data))]),
             400, "INVALID_ARGUMENT", "one photo")
    error_of(api.call("POST", ANALYSES, data={"other": "x"}, files={"image": ("a.jpg", data)}),
             400, "INVALID_ARGUMENT", "other")
    error_of(api.analyze(b"--x\r\n\r\nbroken", "multipart/form-data"), 400, "INVALID_ARGUMENT", "multipart")


def test_unsupported_content_type_and_encoding(api):
    for content_type in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
        error_of(api.analyze(obama_jpeg(), content_type), 415, "INVALID_ARGUMENT", content_type, "image/*")
    error_of(api.analyze(obama_jpeg(), headers={"content-encoding": "gzip"}), 415, "INVALID_ARGUMENT", "gzip")


def test_unknown_path_and_wrong_method(api):
    error_of(api.call("GET", "/v2/analyses"), 404, "NOT_FOUND")
    error_of(api.call("GET", "/v1/analyses/x/y"), 404, "NOT_FOUND")
    wrong = api.call("PUT", ANALYSES, content=b"x")
    error_of(wrong, 405, "UNIMPLEMENTED", "PUT")
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    error_of(api.call("POST", ONE, f"{ANALYSES}/{MISSING_ID}"), 405, "UNIMPLEMENTED")
    error_of(api.call("DELETE", "/openapi.json"), 405, "UNIMPLEMENTED")


def test_head_answers_like_get_without_a_body(api, local_stack):
    """HEAD on every GET route: GET's status and headers (Content-Length included), no body; counted as HEAD."""
    head_ok = ("faceanalysis_http_requests_total",
               (("code", "200"), ("method", "HEAD"), ("route", ONE), ("service", "image-input")))
    before = scrape(local_stack.metrics_urls["image-input"]).get(head_ok, 0)
    posted = api.analyze(image("face_recognition/obama.jpg").read_bytes(), params={"skip_cache": "true"})
    assert posted.status_code == 200, posted.text[:500]
    path = f"{ANALYSES}/{posted.json()['analysis_id']}"
    got = api.call("GET", ONE, path)
    head = api.call("HEAD", ONE, path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("application/json")
    assert int(head.headers["content-length"]) == len(got.content) > 0
    assert scrape(local_stack.metrics_urls["image-input"])[head_ok] == before + 1

    missing = api.call("HEAD", ONE, f"{ANALYSES}/{MISSING_ID}")
    assert missing.status_code == 404 and missing.content == b""
    assert missing.headers["content-type"].startswith("application/json")  # the error's, left out

    page = api.call("HEAD", "/")
    assert page.status_code == 200 and page.content == b""
    assert page.headers["content-type"].startswith("text/html")
    assert int(page.headers["content-length"]) == (http_app.WEB_DIR / "index.html").stat().st_size
    for route in ("/openapi.json", ANALYSES):
        answer = api.call("HEAD", route)
        assert answer.status_code == 200 and answer.content == b"", route
        assert answer.headers["content-type"].startswith("application/json"), route
    assert api.call("HEAD", "/web/{name}", "/web/app.js").status_code == 200
    assert api.call("HEAD", "/nowhere").status_code == 404


def test_over_the_cap_by_content_length_and_chunked(api):
    over = b"\xff\xd8\xff" + bytes(CAP)
    error_of(api.analyze(over), 413, "RESOURCE_EXHAUSTED", str(len(over)), "FACEANALYSIS_MAX_IMAGE_BYTES")

    def chunks():  # no length: counted as it arrives
        yield b"\xff\xd8\xff"
        for _ in range(CAP // MiB + 4):
            yield bytes(MiB)

    error_of(api.analyze(chunks()), 413, "RESOURCE_EXHAUSTED", "limit")
    form = api.call("POST", ANALYSES, files={"image": ("big.jpg", over, "image/jpeg")})
    error_of(form, 413, "RESOURCE_EXHAUSTED")
    # the same stack still answers at once
    assert api.analyze(obama_jpeg(), params={"no_store": "true"}).status_code == 200


def raw_exchange(url: str, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` on a plain socket and return what the server says before it waits for more."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_oversized_upload_is_refused_before_its_body_is_sent(local_stack):
    """A client that waits for `100 Continue` is told 413 instead, and never sends its 1 GB."""
    head = (f"POST {ANALYSES} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {1024 * MiB}\r\n"
            "Expect: 100-continue\r\nx-request-id: expect-413\r\n\r\n").encode()
    answer = raw_exchange(local_stack.http_url, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"x-request-id: expect-413" in answer.lower()
    # a good upload gets its 100 Continue
    ok = head.replace(str(1024 * MiB).encode(), b"1000")
    assert raw_exchange(local_stack.http_url, ok).startswith(b"HTTP/1.1 100 Continue")


# --- web files -----------------------------------------------------------------------------------

def test_web_page_and_its_files(api):
    page = api.call("GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    index = Path(http_app.WEB_DIR / "index.html").read_bytes()
    assert page.content == index
    assert api.call("GET", "/web/{name}", "/web/index.html").content == index
    for name in sorted(p.name for p in http_app.WEB_DIR.iterdir() if p.is_file())[:5]:
        assert api.call("GET", "/web/{name}", f"/web/{name}").status_code == 200, name


@pytest.mark.parametrize("path", ["/web/..%2F..%2Fruntime%2Fconfig.py", "/web/../http/app.py", "/web/.hidden",
                                  "/web/%2e%2e", "/web/", "/web/nothing-here.js", "/web//etc/passwd",
                                  "/web/..%5c..%5capp.py"])
def test_no_way_out_of_the_web_directory(api, path):
    answer = api.client.get(path)
    assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
    assert answer.json()["error"]["code"] == "NOT_FOUND"
    assert b"import" not in answer.content


# --- API keys: 401 and 403 -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"a": auth.new_key(), "b": auth.new_key(), "read-only": auth.new_key()}


@pytest.fixture(scope="module")
def keyed(local_stack, tmp_path_factory, keys, document):
    work = tmp_path_factory.mktemp("http-keys")
    key_file = work / "api-keys"
    key_file.write_text("\n".join([auth.format_line(auth.hash_key(keys["a"]), "tenant-a"),
                                   auth.format_line(auth.hash_key(keys["b"]), "tenant-b"),
                                   auth.format_line(auth.hash_key(keys["read-only"]), "tenant-a",
                                                    frozenset({"read"}))]) + "\n")
    stack = start_image_input(local_stack, work / "image-input", FACEANALYSIS_API_KEYS_FILE=str(key_file))
    client = Api(stack.http_url, document)
    yield client
    client.client.close()
    stack.stop()


def test_api_keys(keyed, keys):
    bearer = lambda key: {"authorization": f"Bearer {key}"}  # noqa: E731
    data = obama_jpeg()
    missing = keyed.analyze(data)
    error_of(missing, 401, "UNAUTHENTICATED", "missing API key")
    assert missing.headers["www-authenticate"] == "Bearer"
    error_of(keyed.analyze(data, headers=bearer("fa_" + "x" * 40)), 401, "UNAUTHENTICATED", "unknown API key")
    error_of(keyed.call("GET", ANALYSES, headers={"authorization": "Basic abc"}), 401, "UNAUTHENTICATED", "malformed")

    posted = keyed.analyze(data, headers=bearer(keys["a"]), params={"skip_cache": "true"})
    assert posted.status_code == 200, posted.text[:300]
    analysis_id = posted.json()["analysis_id"]
    # x-api-key works as well; another tenant does not see the result
    assert keyed.call("GET", ONE, f"{ANALYSES}/{analysis_id}", headers={"x-api-key": keys["a"]}).status_code == 200
    error_of(keyed.call("GET", ONE, f"{ANALYSES}/{analysis_id}", headers=bearer(keys["b"])), 404, "NOT_FOUND")
    # a key without the delete scope
    error_of(keyed.call("DELETE", ONE, f"{ANALYSES}/{analysis_id}", headers=bearer(keys["read-only"])),
             403, "PERMISSION_DENIED", "delete")
    error_of(keyed.analyze(data, headers=bearer(keys["read-only"])), 403, "PERMISSION_DENIED", "analyze")
    # two credentials at once are refused, never one of them picked
    error_of(keyed.call("GET", ANALYSES, headers={**bearer(keys["a"]), "x-api-key": keys["b"]}),
             401, "UNAUTHENTICATED", "malformed")
    assert keyed.call("DELETE", ONE, f"{ANALYSES}/{analysis_id}", headers=bearer(keys["a"])).status_code == 200
    # the page and the document need no key
    assert keyed.call("GET", "/").status_code == 200
    assert keyed.call("GET", "/openapi.json").status_code == 200


# --- 503: peers down, and a full admission line ------------------------------------------------------

@pytest.fixture(scope="module")
def stranded(local_stack, tmp_path_factory, document):
    """An image-input whose peers are all down (nothing listens on their ports), one image at a time."""
    dead = {f"FACEANALYSIS_{peer}_TARGET": f"dns:///127.0.0.1:{free_port()}" for peer in ("LANDMARK", "ATTRIBUTES",
                                                                                          "STORAGE")}
    stack = start_image_input(local_stack, tmp_path_factory.mktemp("http-stranded") / "image-input", **dead,
                              FACEANALYSIS_PEER_RETRY_SECONDS="4", FACEANALYSIS_MAX_CONCURRENT_IMAGES="1",
                              FACEANALYSIS_ADMISSION_QUEUE="0")
    client = Api(stack.http_url, document)
    yield client, stack
    client.client.close()
    stack.stop()


def test_peers_down_is_503_with_retry_after(stranded):
    client, _ = stranded
    answer = client.analyze(obama_jpeg(), params={"skip_cache": "true"})
    error_of(answer, 503, "UNAVAILABLE")
    assert int(answer.headers["retry-after"]) > 0
    error_of(client.call("GET", ANALYSES), 503, "UNAVAILABLE")


def test_overload_is_503_with_retry_after(stranded):
    client, stack = stranded
    url = stack.metrics_urls["image-input"]
    in_flight = ("faceanalysis_work_in_flight", (("service", "image-input"),))
    first = threading.Thread(target=client.analyze, args=(obama_jpeg(),), kwargs={"params": {"skip_cache": "true"}})
    first.start()
    try:
        deadline = time.monotonic() + 3
        while scrape(url).get(in_flight, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scrape(url).get(in_flight, 0) == 1, "the first upload should hold the only slot (peers retried)"
        busy = client.analyze(obama_jpeg(), params={"skip_cache": "true"})
        error_of(busy, 503, "RESOURCE_EXHAUSTED", "capacity")
        assert busy.headers["retry-after"] == "1"
    finally:
        first.join(timeout=30)


def test_sigterm_lets_an_http_request_in_flight_finish(stranded):
    """SIGTERM while an upload is being worked on (its peers retried for seconds): the request
    still gets its answer, and the process then exits cleanly. Runs last of the `stranded` tests."""
    client, stack = stranded
    answers = []
    first = threading.Thread(target=lambda: answers.append(client.analyze(obama_jpeg(),
                                                                          params={"skip_cache": "true"})))
    first.start()
    url = stack.metrics_urls["image-input"]
    in_flight = ("faceanalysis_work_in_flight", (("service", "image-input"),))
    deadline = time.monotonic() + 3
    while scrape(url).get(in_flight, 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    process = stack.processes["image-input"]
    process.send_signal(signal.SIGTERM)
    first.join(timeout=30)
    (answer,) = answers
    error_of(answer, 503, "UNAVAILABLE")  # the peers' answer, not a dropped connection
    assert process.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(stack.http_url + "/openapi.json", timeout=5)


# --- HTTPS with the gRPC port's certificate --------------------------------------------------------

def test_https_and_mtls_with_the_grpc_certificate(local_stack, tmp_path, document):
    """With TLS and a client CA set (mTLS), the HTTP port serves HTTPS with the gRPC port's
    certificate and, like the gRPC port, takes only clients with a certificate from that CA."""
    ca = CA(tmp_path / "pki")
    server, client_cert = ca.issue("image-input"), ca.issue("client")
    stack = start_image_input(local_stack, tmp_path / "image-input", FACEANALYSIS_TLS_CERT_FILE=str(server.cert),
                              FACEANALYSIS_TLS_KEY_FILE=str(server.key), FACEANALYSIS_TLS_CLIENT_CA_FILE=str(ca.path))
    try:
        assert stack.http_url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(ca.path))
        with pytest.raises(httpx.HTTPError):  # no client certificate: no handshake
            httpx.get(stack.http_url + "/openapi.json", verify=trusted, timeout=5)
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the HTTPS port gets nothing usable
            httpx.get(stack.http_url.replace("https://", "http://") + "/openapi.json", timeout=5).raise_for_status()
        trusted.load_cert_chain(str(client_cert.cert), str(client_cert.key))
        client = Api(stack.http_url, document, verify=trusted)
        answer = client.analyze(obama_jpeg(), params={"no_store": "true"})
        assert answer.status_code == 200 and len(answer.json()["faces"]) == 1
        client.client.close()
    finally:
        stack.stop()


# --- the README's curl commands run as written ---------------------------------------------------

def readme_curl_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Calling the API with curl", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return block


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_commands_run_as_written(local_stack, tmp_path):
    block = readme_curl_block()
    assert "localhost:8080" in block
    shutil.copy(image("face_recognition/two_people.jpg"), tmp_path / "photo.jpg")
    script = "set -euo pipefail\n" + block.replace("localhost:8080", local_stack.http_url.removeprefix("http://"))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["faces"]) == 2
    assert '"deleted": true' in proc.stdout
