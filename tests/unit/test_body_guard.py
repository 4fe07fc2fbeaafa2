"""The body guard alone, around a toy ASGI app: what it refuses, what it passes on whole, and a
route's unexpected error answered as a 500 without ending the connection."""

from __future__ import annotations

import asyncio
import json

from service.body_guard import BodyGuard


async def echo(scope, receive, send):
    """Answers the body it read, or fails when asked to."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if body == b'"fail"':
        raise RuntimeError("a bug in a route")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(body_chunks: list[bytes], path: str = "/generate", max_bytes: int = 1000,
         content_type: bytes = b"application/json") -> tuple[int, dict, bytes]:
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", content_type)]}
    incoming = [{"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1}
                for i, chunk in enumerate(body_chunks)]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(BodyGuard(echo, max_bytes=max_bytes)(scope, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_good_body_reaches_the_route_whole_even_in_pieces():
    assert call([b'{"prompt": ', b'"Hi"}']) == (200, {}, b'{"prompt": "Hi"}')


def test_a_body_past_the_limit_is_413_without_reading_the_rest():
    status, headers, body = call([b"x" * 600, b"x" * 600, b"never read"], max_bytes=1000)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["detail"][0]["loc"] == ["body"]


def test_non_finite_numbers_and_lone_surrogates_are_422_naming_where_they_are():
    cases = {
        b'{"temperature": NaN}': ["body", "temperature"],
        b'{"a": [1, {"b": -Infinity}]}': ["body", "a", 1, "b"],
        b'{"top_p": 1e400}': ["body", "top_p"],
        b'{"messages": [{"content": "ok \\udfff"}]}': ["body", "messages", 0, "content"],
    }
    for text, loc in cases.items():
        status, _, body = call([text])
        assert status == 422, text
        assert json.loads(body)["detail"][0]["loc"] == loc, text


def test_under_v1_the_refusal_takes_openai_s_shape():
    status, _, body = call([b'{"model": "tiny", "temperature": Infinity}'], path="/v1/chat/completions")
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == "temperature" and error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_value"


def test_what_is_not_json_is_left_to_the_route():
    assert call([b"{not json"])[0] == 200
    assert call([b"NaN"], content_type=b"text/plain")[0] == 200


def test_an_unexpected_error_is_a_500_naming_no_internals_and_not_raised_on():
    status, _, body = call([b'"fail"'])
    assert status == 500
    assert "RuntimeError" in body.decode() and "a bug in a route" not in body.decode()
