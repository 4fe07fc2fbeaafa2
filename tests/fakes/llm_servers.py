"""Small, real HTTP servers that speak remote LLM provider protocols, for tests.

Each ``FakeLLMServer`` listens on ``127.0.0.1`` (a free port) in a daemon thread and
answers well enough that ``litellm`` really talks to it:

=========  ==============================  =====================================
protocol   litellm model / api_base        paths served
=========  ==============================  =====================================
openai     ``openai/<m>``, ``together_ai/  POST /v1/chat/completions (+stream),
           <m>`` with api_base             POST /v1/completions, POST
           ``http://127.0.0.1:PORT/v1``    /v1/embeddings, GET /v1/models
anthropic  ``anthropic/<m>`` with api_base POST /v1/messages (+stream), POST
           ``http://127.0.0.1:PORT``       /v1/messages/count_tokens, GET
           (litellm appends /v1/messages)  /v1/models
ollama     ``ollama_chat/<m>`` (or         POST /api/chat (+stream), POST
           ``ollama/<m>``) with api_base   /api/generate (+stream), POST
           ``http://127.0.0.1:PORT``       /api/show, GET /api/tags,
                                           GET /api/version, GET /
=========  ==============================  =====================================

The ``openai`` routes are matched on their tail (``.../chat/completions``), so an
api_base without ``/v1`` works as well.

``behaviour`` (changeable at any time) decides how the *next* request is answered:

* ``"ok"``       a proper provider answer (``reply_text`` as the content);
* ``"401"``, ``"403"``, ``"429"``, ``"500"``  that status with the provider's error
  JSON; the 401 message echoes the full key the client sent, like real OpenAI does
  (``"Incorrect API key provided: <key>. ..."``), so tests can check redaction;
* ``"garbage"``  status 200 with ``<html>oops</html>`` (not JSON);
* ``"hang"``     reads the request, then sleeps (``hang_s``, default 30 s, waking
  early when the server stops) and closes the connection without answering.

``next_behaviours`` is a list consumed from the front, one entry per request, before
falling back to ``behaviour`` (handy for "fail once, then succeed").  The behaviour
applies to every request, model listings included.

Every request is recorded in ``server.requests`` (dicts with ``method``, ``path``,
``query``, ``headers`` (lowercase keys), ``json`` (parsed body or None), ``body``
(raw text), ``api_key`` (from ``Authorization: Bearer``/``x-api-key``/``api-key``),
``behaviour`` (how it was answered)).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROTOCOLS = ("openai", "anthropic", "ollama")
BEHAVIOURS = ("ok", "401", "403", "429", "500", "garbage", "hang")
GARBAGE_BODY = "<html>oops</html>"

__all__ = ["BEHAVIOURS", "GARBAGE_BODY", "PROTOCOLS", "FakeLLMServer", "refused_port"]


def refused_port(path: str = "") -> str:
    """A base URL on 127.0.0.1 where nothing listens (connection refused), plus ``path``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _check_behaviour(value: object) -> str:
    text = str(value)
    if text not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {value!r}; expected one of {BEHAVIOURS}")
    return text


def _count_tokens(value: object) -> int:
    """A rough, deterministic token count: the number of words in every string found."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_count_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_tokens(v) for v in value)
    return 0


def _pieces(text: str, count: int = 3) -> list[str]:
    """Split ``text`` into up to ``count`` consecutive pieces whose concatenation is ``text``."""
    words = text.split(" ")
    if len(words) < 2:
        return [text]
    size = max(1, -(-len(words) // count))
    groups = [words[i : i + size] for i in range(0, len(words), size)]
    out = [" ".join(g) for g in groups]
    return [p if i == len(out) - 1 else p + " " for i, p in enumerate(out)]


_STATUS_TEXT = {"401": 401, "403": 403, "429": 429, "500": 500}


class FakeLLMServer:
    """A fake remote LLM provider (see the module docstring).

    Use as a context manager (``with FakeLLMServer("openai") as server:``) or call
    ``start()``/``stop()``.
    """

    def __init__(
        self,
        protocol: str = "openai",
        behaviour: str = "ok",
        reply_text: str | None = None,
        *,
        hang_s: float = 30.0,
        delay_s: float = 0.0,
        models: list[str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
        self.protocol = protocol
        self.behaviour = behaviour
        self.reply_text = reply_text if reply_text is not None else f"Hello from the fake {protocol} server"
        self.hang_s = hang_s
        #: Seconds to wait before an "ok" answer (interruptible by stop()).
        self.delay_s = delay_s
        #: Model names listed by GET /v1/models or /api/tags.
        self.models = list(models) if models is not None else ["fake-model"]
        #: When set, 429 answers carry a ``retry-after`` header with this value.
        self.retry_after = retry_after
        #: The arguments of the call an openai chat answers with when its tool_choice names a function.
        self.tool_arguments = '{"city": "Paris"}'
        #: Behaviours consumed one per request, before falling back to ``behaviour``.
        self.next_behaviours: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ------------------------------------------------------------

    @property
    def behaviour(self) -> str:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: str) -> None:
        self._behaviour = _check_behaviour(value)

    def _take_behaviour(self) -> str:
        with self._lock:
            if self.next_behaviours:
                return _check_behaviour(self.next_behaviours.pop(0))
            return self._behaviour

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            return self
        self._stopping = threading.Event()
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.protocol}-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes "hang" and "delay" handlers
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Root URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """The api_base to give litellm for this protocol."""
        return f"{self.url}/v1" if self.protocol == "openai" else self.url

    # -- recorded requests --------------------------------------------------------

    @property
    def last_request(self) -> dict[str, Any]:
        with self._lock:
            if not self.requests:
                raise AssertionError(f"the fake {self.protocol} server received no request")
            return self.requests[-1]

    def requests_to(self, path_suffix: str) -> list[dict[str, Any]]:
        """Recorded requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.requests if r["path"].endswith(path_suffix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def __repr__(self) -> str:
        where = self.url if self._httpd is not None else "stopped"
        return f"FakeLLMServer({self.protocol!r}, behaviour={self._behaviour!r}, {where})"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        pass  # clients that time out and hang up are expected; print nothing


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    server_version = "FakeLLM/1.0"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection; streams end at close

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- plumbing -----------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        fake = self.fake
        raw = self._read_body()
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        behaviour = fake._take_behaviour()
        entry = {
            "method": self.command,
            "path": split.path,
            "query": {k: v[-1] for k, v in parse_qs(split.query).items()},
            "headers": headers,
            "json": body,
            "body": text,
            "api_key": _api_key(headers),
            "behaviour": behaviour,
            "time": time.time(),
        }
        fake._record(entry)
        self._body = body if isinstance(body, dict) else {}
        self._entry = entry
        try:
            self._answer(behaviour)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (e.g. it timed out)

    def _answer(self, behaviour: str) -> None:
        fake = self.fake
        if behaviour == "hang":
            fake._stopping.wait(fake.hang_s)
            self.close_connection = True
            return  # no answer at all
        if behaviour == "garbage":
            self._send_raw(200, GARBAGE_BODY.encode(), "text/html; charset=utf-8")
            return
        if behaviour in _STATUS_TEXT:
            self._send_error(_STATUS_TEXT[behaviour])
            return
        if fake.delay_s > 0 and fake._stopping.wait(fake.delay_s):
            return
        route = {"openai": self._openai, "anthropic": self._anthropic, "ollama": self._ollama}[fake.protocol]
        route(self._entry["method"], self._entry["path"].rstrip("/") or "/")

    def _send_raw(
        self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", extra)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _write(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()

    def _model(self) -> str:
        return str(self._body.get("model") or "fake-model")

    def _stream_requested(self, default: bool = False) -> bool:
        return bool(self._body.get("stream", default))

    # -- errors -------------------------------------------------------------------

    def _error_message(self, status: int) -> tuple[str, str, str]:
        """(message, openai-style type, code) for ``status``."""
        key = self._entry["api_key"] or ""
        if status == 401:
            return (
                f"Incorrect API key provided: {key}. "
                "You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if status == 403:
            return ("You are not allowed to use this model (fake 403).", "permission_error", "forbidden")
        if status == 429:
            return ("Rate limit reached for requests (fake 429).", "requests", "rate_limit_exceeded")
        return (
            "The server had an error while processing your request (fake 500).",
            "server_error",
            "server_error",
        )

    def _send_error(self, status: int, message: str | None = None) -> None:
        default_message, kind, code = self._error_message(status)
        message = message or default_message
        extra: dict[str, str] = {}
        if status == 429 and self.fake.retry_after is not None:
            extra["retry-after"] = str(self.fake.retry_after)
        protocol = self.fake.protocol
        if protocol == "openai":
            payload: object = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        elif protocol == "anthropic":
            anthropic_type = {
                401: "authentication_error",
                403: "permission_error",
                404: "not_found_error",
                429: "rate_limit_error",
            }.get(status, "api_error")
            payload = {"type": "error", "error": {"type": anthropic_type, "message": message}}
        else:
            payload = {"error": message}
        self._send_json(status, payload, extra)

    def _not_found(self) -> None:
        path = self._entry["path"]
        self._send_error(404, f"fake {self.fake.protocol} server: no route for {self.command} {path}")

    # -- openai -------------------------------------------------------------------

    def _usage_openai(self) -> dict[str, int]:
        prompt = _count_tokens(self._body.get("messages") or self._body.get("prompt") or "")
        completion = _count_tokens(self.fake.reply_text)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _openai(self, method: str, path: str) -> None:
        if method == "GET" and path.endswith("/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                        for m in self.fake.models
                    ],
                },
            )
        elif method == "POST" and path.endswith("/chat/completions"):
            self._openai_chat()
        elif method == "POST" and path.endswith("/completions"):
            self._openai_text_completion()
        elif method == "POST" and path.endswith("/embeddings"):
            inputs = self._body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            self._send_json(
                200,
                {
                    "object": "list",
                    "model": self._model(),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.0] * 8} for i in range(len(items))
                    ],
                    "usage": {"prompt_tokens": _count_tokens(items), "total_tokens": _count_tokens(items)},
                },
            )
        else:
            self._not_found()

    def _openai_chat(self) -> None:
        created = int(time.time())
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        model = self._model()
        text = self.fake.reply_text
        # A tool_choice naming a function is answered with a call to it, as OpenAI does.
        forced = self._body.get("tool_choice")
        call = None
        if isinstance(forced, dict):
            call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                    "function": {"name": forced["function"]["name"], "arguments": self.fake.tool_arguments}}
        if not self._stream_requested():
            message = {"role": "assistant", "content": text}
            if call:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
            self._send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": "tool_calls" if call else "stop",
                        }
                    ],
                    "usage": self._usage_openai(),
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        self._start_stream("text/event-stream")
        self._write(chunk({"role": "assistant", "content": ""}, None))
        if call:
            head = {"index": 0, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            self._write(chunk({"tool_calls": [head]}, None))
            for piece in _pieces(call["function"]["arguments"]):
                self._write(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None))
        else:
            for piece in _pieces(text):
                self._write(chunk({"content": piece}, None))
        self._write(chunk({}, "tool_calls" if call else "stop"))
        options = self._body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": self._usage_openai(),
            }
            self._write(f"data: {json.dumps(usage)}\n\n")
        self._write("data: [DONE]\n\n")

    def _openai_text_completion(self) -> None:
        created = int(time.time())
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"
        model = self._model()
        text = self.fake.reply_text
        if not self._stream_requested():
            self._send_json(
                200,
                {
                    "id": ident,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                    "usage": self._usage_openai(),
                },
            )
            return
        self._start_stream("text/event-stream")
        pieces = _pieces(text)
        for i, piece in enumerate(pieces):
            finish = "stop" if i == len(pieces) - 1 else None
            payload = {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}],
            }
            self._write(f"data: {json.dumps(payload)}\n\n")
        self._write("data: [DONE]\n\n")

    # -- anthropic ----------------------------------------------------------------

    def _anthropic(self, method: str, path: str) -> None:
        if method == "POST" and path.endswith("/v1/messages"):
            self._anthropic_messages()
        elif method == "POST" and path.endswith("/v1/messages/count_tokens"):
            self._send_json(200, {"input_tokens": self._anthropic_input_tokens()})
        elif method == "GET" and path.endswith("/v1/models"):
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.fake.models
            ]
            self._send_json(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        else:
            self._not_found()

    def _anthropic_input_tokens(self) -> int:
        return _count_tokens(self._body.get("messages") or []) + _count_tokens(self._body.get("system") or "")

    def _anthropic_messages(self) -> None:
        ident = f"msg_{uuid.uuid4().hex[:24]}"
        model = self._model()
        text = self.fake.reply_text
        input_tokens = self._anthropic_input_tokens()
        output_tokens = _count_tokens(text)
        if not self._stream_requested():
            self._send_json(
                200,
                {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                },
            )
            return

        def event(name: str, payload: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(payload)}\n\n"

        self._start_stream("text/event-stream")
        self._write(
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": ident,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                    },
                },
            )
        )
        self._write(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
        self._write(event("ping", {"type": "ping"}))
        for piece in _pieces(text):
            self._write(
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
        self._write(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        self._write(
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            )
        )
        self._write(event("message_stop", {"type": "message_stop"}))

    # -- ollama -------------------------------------------------------------------

    def _ollama(self, method: str, path: str) -> None:
        if method == "POST" and path == "/api/chat":
            self._ollama_generate(chat=True)
        elif method == "POST" and path == "/api/generate":
            self._ollama_generate(chat=False)
        elif method == "GET" and path == "/api/tags":
            self._send_json(
                200,
                {
                    "models": [
                        {
                            "name": m,
                            "model": m,
                            "modified_at": "2025-01-01T00:00:00Z",
                            "size": 1,
                            "digest": "0" * 64,
                            "details": {"format": "gguf", "family": "llama", "parameter_size": "1B"},
                        }
                        for m in self.fake.models
                    ]
                },
            )
        elif method == "POST" and path == "/api/show":
            self._send_json(
                200,
                {
                    "modelfile": "",
                    "parameters": "",
                    "template": "{{ .Prompt }}",
                    "details": {"format": "gguf", "family": "llama", "parameter_size": "1B"},
                    "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
                    "capabilities": ["completion"],
                },
            )
        elif method == "GET" and path == "/api/version":
            self._send_json(200, {"version": "0.0.0-fake"})
        elif method == "GET" and path == "/":
            self._send_raw(200, b"Ollama is running", "text/plain; charset=utf-8")
        else:
            self._not_found()

    def _ollama_generate(self, chat: bool) -> None:
        model = self._model()
        text = self.fake.reply_text
        prompt_tokens = _count_tokens(self._body.get("messages") if chat else self._body.get("prompt") or "")
        eval_tokens = _count_tokens(text)

        def now() -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

        def piece_obj(piece: str) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": model, "created_at": now()}
            if chat:
                obj["message"] = {"role": "assistant", "content": piece}
            else:
                obj["response"] = piece
            return obj

        final_stats = {
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 1_000,
            "eval_count": eval_tokens,
            "eval_duration": 1_000,
        }
        # Ollama streams unless told not to.
        if not self._stream_requested(default=True):
            self._send_json(200, {**piece_obj(text), **final_stats})
            return
        self._start_stream("application/x-ndjson")
        for piece in _pieces(text):
            self._write(json.dumps({**piece_obj(piece), "done": False}) + "\n")
        self._write(json.dumps({**piece_obj(""), **final_stats}) + "\n")


def _api_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key") or headers.get("api-key") or (auth or None)
