"""Every request body, checked once before any route sees it: its size, and that its JSON holds only
what a route can use.

Python's json accepts NaN, Infinity and 1e309 (read as inf), and `"\\udfff"` (a lone UTF-16
surrogate, which no UTF-8 text can hold). Each reached the routes, and failed deep inside them or
in the error renderer as a 500; a surrogate in a chat message was even taken for the local model's
failure. Checking here covers every endpoint, present and future, and names the field at fault.

The size is checked while the body arrives, so a 200 MB body is refused after its first 4 MB, not
after it was buffered. An unexpected error in a route is answered here too, without re-raising:
Starlette's outer handler re-raises after answering, and uvicorn then drops the keep-alive connection.
"""

from __future__ import annotations

import json
import logging
import math

from service.errors import error_response, unexpected_response

log = logging.getLogger("service")


class _NotFinite:
    def __init__(self, text: str):
        self.text = text


def _number(text: str):
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return True  # FastAPI reads a body without a content type as JSON


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_unusable(value, loc: list) -> tuple[list, str] | None:
    """The first value JSON should not have carried: where it is and why, or None."""
    if isinstance(value, _NotFinite):
        return loc, f"{value.text} is not a finite number; JSON numbers must be finite"
    if isinstance(value, str):
        if _has_surrogate(value):
            return loc, "holds a lone UTF-16 surrogate (such as \\udfff), which is not Unicode text"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key):
                return loc, "a key holds a lone UTF-16 surrogate, which is not Unicode text"
            found = find_unusable(item, [*loc, key])
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_unusable(item, [*loc, index])
            if found:
                return found
    return None


class BodyGuard:
    """ASGI middleware: 413 past `max_bytes`, 422 for unusable JSON values, 500 without a reset."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = scope["headers"]
        declared = _content_length(headers)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        receive_rest = receive
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break  # the client left; the route sees an empty body and the disconnect
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_bytes:
                    await self._too_large(scope, receive, send)
                    return
            body = b"".join(chunks)
            if body and _is_json(headers):
                problem = _unusable(body)
                if problem:
                    loc, why = problem
                    error = {"loc": loc, "msg": why, "type": "value_error"}
                    await error_response(path, 422, [error])(scope, receive, send)
                    return
            receive_rest = _replay(body, receive)
        started = False

        async def watch(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive_rest, watch)
        except Exception as exc:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], path)
            await unexpected_response(path, exc)(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        error = {"loc": ["body"], "msg": f"the body exceeds {self.max_bytes} bytes "
                 "(WORKBENCH_MAX_BODY_BYTES)", "type": "too_large"}
        response = error_response(scope["path"], 413, [error], headers={"Connection": "close"})
        await response(scope, receive, send)


def _unusable(body: bytes) -> tuple[list, str] | None:
    try:
        value = json.loads(body, parse_constant=_NotFinite, parse_float=_number)
    except RecursionError:
        return ["body"], "the JSON is nested too deeply"
    except ValueError:
        return None  # not JSON at all: FastAPI answers that with its own 422
    return find_unusable(value, ["body"])


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
