"""A wasi:http/proxy server in Python, built with componentize-py.

GET /              200 "Hello from Python on berth!"
GET /env?name=KEY  200 with the value of KEY, or 404 "not set"
anything else      404 "not found"

Each request prints "request METHOD PATH" to stdout, which berth forwards to
the container's log.
"""

import os
from urllib.parse import parse_qs, urlsplit

from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from componentize_py_types import Ok


def method_name(method) -> str:
    if isinstance(method, Method_Other):
        return method.value
    # Method_Get -> "GET", Method_Post -> "POST", ...
    return type(method).__name__.removeprefix("Method_").upper()


def respond(response_out: ResponseOutparam, status: int, text: str) -> None:
    data = text.encode("utf-8")
    headers = Fields.from_list(
        [
            ("content-type", b"text/plain; charset=utf-8"),
            ("content-length", str(len(data)).encode()),
        ]
    )
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        # blocking-write-and-flush takes at most 4096 bytes at a time.
        for start in range(0, len(data), 4096):
            stream.blocking_write_and_flush(data[start : start + 4096])
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        target = urlsplit(request.path_with_query() or "/")
        # The instance is dropped after the response, so flush every line.
        print(f"request {method_name(method)} {target.path}", flush=True)

        if not isinstance(method, Method_Get):
            respond(response_out, 404, "not found\n")
        elif target.path == "/":
            respond(response_out, 200, "Hello from Python on berth!\n")
        elif target.path == "/env":
            name = parse_qs(target.query).get("name", [""])[0]
            value = os.environ.get(name)
            if value is None:
                respond(response_out, 404, "not set\n")
            else:
                respond(response_out, 200, value + "\n")
        else:
            respond(response_out, 404, "not found\n")
