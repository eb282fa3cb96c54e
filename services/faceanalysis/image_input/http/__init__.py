"""image-input's HTTP/JSON API and web page: a thin transcoder in front of its own gRPC API.

It runs in the image-input process, on the asyncio loop of its grpc.aio server
(`runtime.server.ServiceApp.companions`), and serves

    POST   /v1/analyses             one image: raw body or multipart form; AnalysisOptions in the query
    GET    /v1/analyses             stored analyses, a page at a time
    GET    /v1/analyses/{id}        one stored analysis
    DELETE /v1/analyses/{id}
    GET    /openapi.json            the OpenAPI 3.1 document, built from the same route table
    GET    / and /web/{name}        the web page

Every API handler calls image-input's own gRPC API in-process, over a private channel to a unix
socket the gRPC server also listens on, and forwards the caller's credentials and request id as
metadata. So API keys and tenants, the byte and pixel caps, admission, metrics and request ids
are exactly gRPC's: one implementation, and an HTTP call is counted in the gRPC metrics like any
other.

Why a transcoder of our own: no maintained Python library transcodes REST paths to gRPC with a
raw request body. grpc-gateway and Envoy's transcoder are separate proxies (another process and
image to ship), and connect-python serves the Connect protocol, whose paths are
/package.Service/Method and whose bodies are messages, so it cannot take a photo as the body of
POST /v1/analyses. What is left is small: the route table (app.py), query parameters from the
request messages' descriptors (query.py), a capped upload reader (upload.py), the status mapping
(errors.py) and schemas from the proto descriptors (schemas.py, openapi.py). aiohttp serves it
(listener.py; pyproject.toml says why aiohttp).
"""
