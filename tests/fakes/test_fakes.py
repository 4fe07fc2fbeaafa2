"""The fake provider servers really work with litellm (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: no price-list download

import threading
import time

import httpx
import litellm
import pytest

from tests.fakes.llm_servers import GARBAGE_BODY, FakeLLMServer, refused_port

litellm.suppress_debug_info = True

pytestmark = pytest.mark.filterwarnings("ignore:.* using the `ReadOnly` qualifier:UserWarning")

KEY = "test-key-123"
MESSAGES = [{"role": "user", "content": "hi"}]

# (litellm model, fake protocol, model name the server sees, path it is asked for, key header, expected value)
PROVIDERS = {
    "openai": (
        "openai/gpt-fake",
        "openai",
        "gpt-fake",
        "/v1/chat/completions",
        "authorization",
        f"Bearer {KEY}",
    ),
    "together_ai": (
        "together_ai/meta-llama/Llama-fake",
        "openai",
        "meta-llama/Llama-fake",
        "/v1/chat/completions",
        "authorization",
        f"Bearer {KEY}",
    ),
    "anthropic": ("anthropic/claude-fake", "anthropic", "claude-fake", "/v1/messages", "x-api-key", KEY),
    "ollama_chat": (
        "ollama_chat/llama-fake",
        "ollama",
        "llama-fake",
        "/api/chat",
        "authorization",
        f"Bearer {KEY}",
    ),
}

# What litellm 1.110.2 raises for each behaviour, per provider.
E = litellm.exceptions
EXPECTED_ERRORS = {
    "401": dict.fromkeys(PROVIDERS, E.AuthenticationError),
    "403": {
        "openai": E.APIError,
        "together_ai": E.APIError,
        "anthropic": E.PermissionDeniedError,
        "ollama_chat": E.PermissionDeniedError,
    },
    "429": dict.fromkeys(PROVIDERS, E.RateLimitError),
    "500": dict.fromkeys(PROVIDERS, E.InternalServerError),
    "garbage": {
        "openai": E.InternalServerError,
        "together_ai": E.APIError,
        "anthropic": E.APIConnectionError,
        "ollama_chat": E.APIConnectionError,
    },
}
EXPECTED_STATUS = {"401": 401, "403": 403, "429": 429, "500": 500}


def call(provider: str, server_or_base: FakeLLMServer | str, **kwargs):
    model = PROVIDERS[provider][0]
    base = server_or_base if isinstance(server_or_base, str) else server_or_base.api_base
    params = {"max_tokens": 5, "timeout": 5, "max_retries": 0, **kwargs}
    return litellm.completion(model=model, messages=MESSAGES, api_key=KEY, api_base=base, **params)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_completion_ok(provider):
    _, protocol, model_name, path, key_header, key_value = PROVIDERS[provider]
    with FakeLLMServer(protocol) as server:
        response = call(provider, server)
        assert response.choices[0].message.content == f"Hello from the fake {protocol} server"
        assert response.choices[0].finish_reason == "stop"
        assert response.usage.completion_tokens > 0
        assert len(server.requests) == 1
        req = server.last_request
        assert req["method"] == "POST"
        assert req["path"] == path
        assert req["json"]["model"] == model_name
        assert req["headers"][key_header] == key_value
        assert req["api_key"] == KEY
        assert req["json"]["messages"][-1]["role"] == "user"
        if provider == "ollama_chat":
            assert req["json"]["options"]["num_predict"] == 5
            assert req["json"]["stream"] is False
        else:
            assert req["json"]["max_tokens"] == 5


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_streaming(provider):
    protocol = PROVIDERS[provider][1]
    with FakeLLMServer(protocol, reply_text="one two three four five six") as server:
        chunks = list(call(provider, server, stream=True))
        pieces = [c.choices[0].delta.content or "" for c in chunks]
        assert "".join(pieces) == "one two three four five six"
        assert sum(1 for p in pieces if p) >= 2
        assert server.last_request["json"]["stream"] is True


def test_reply_text_and_behaviour_can_change_between_requests():
    with FakeLLMServer("openai") as server:
        server.reply_text = "first"
        assert call("openai", server).choices[0].message.content == "first"
        server.behaviour = "500"
        with pytest.raises(litellm.exceptions.InternalServerError):
            call("openai", server)
        server.behaviour = "ok"
        server.reply_text = "second"
        assert call("openai", server).choices[0].message.content == "second"
        assert [r["behaviour"] for r in server.requests] == ["ok", "500", "ok"]


def test_next_behaviours_are_consumed_first():
    with FakeLLMServer("anthropic") as server:
        server.next_behaviours = ["429"]
        with pytest.raises(litellm.exceptions.RateLimitError):
            call("anthropic", server)
        assert call("anthropic", server).choices[0].message.content.startswith("Hello")
        assert server.next_behaviours == []


@pytest.mark.parametrize("behaviour", list(EXPECTED_ERRORS))
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_error_behaviours(provider, behaviour):
    protocol = PROVIDERS[provider][1]
    with FakeLLMServer(protocol, behaviour) as server:
        with pytest.raises(Exception) as excinfo:
            call(provider, server)
        assert type(excinfo.value) is EXPECTED_ERRORS[behaviour][provider], repr(excinfo.value)
        assert len(server.requests) == 1  # max_retries=0: no SDK retries
        if behaviour in EXPECTED_STATUS:
            assert excinfo.value.status_code == EXPECTED_STATUS[behaviour]
        if behaviour == "401":
            assert f"Incorrect API key provided: {KEY}" in str(excinfo.value)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_hang_times_out(provider):
    protocol = PROVIDERS[provider][1]
    with FakeLLMServer(protocol, "hang") as server:
        start = time.monotonic()
        with pytest.raises(litellm.exceptions.Timeout):
            call(provider, server, timeout=1)
        assert time.monotonic() - start < 2.5
        assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("openai", litellm.exceptions.InternalServerError),
        ("together_ai", litellm.exceptions.InternalServerError),
        ("anthropic", litellm.exceptions.InternalServerError),
        ("ollama_chat", litellm.exceptions.APIConnectionError),
    ],
)
def test_refused_port(provider, expected):
    base = refused_port("/v1" if PROVIDERS[provider][1] == "openai" else "")
    with pytest.raises(Exception) as excinfo:
        call(provider, base, timeout=2)
    assert type(excinfo.value) is expected, repr(excinfo.value)


def test_openai_sdk_retries_by_default():
    """litellm's openai/ route goes through the OpenAI SDK, which retries twice unless max_retries=0."""
    with FakeLLMServer("openai", "500") as server:
        with pytest.raises(litellm.exceptions.InternalServerError):
            litellm.completion(
                model="openai/gpt-fake", messages=MESSAGES, api_key=KEY, api_base=server.api_base, timeout=5
            )
        assert len(server.requests) == 3


def test_429_retry_after_header():
    with FakeLLMServer("openai", "429", retry_after=0.5) as server:
        response = httpx.post(f"{server.api_base}/chat/completions", json={"model": "m"})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "0.5"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_error_shapes_echo_the_key():
    for protocol in ("openai", "anthropic", "ollama"):
        with FakeLLMServer(protocol, "401") as server:
            response = httpx.post(
                f"{server.url}/whatever", headers={"x-api-key": "sk-secret-xyz"}, json={"model": "m"}
            )
            assert response.status_code == 401
            body = response.json()
            message = {
                "openai": lambda b: b["error"]["message"],
                "anthropic": lambda b: b["error"]["message"],
                "ollama": lambda b: b["error"],
            }[protocol](body)
            assert "Incorrect API key provided: sk-secret-xyz" in message
            if protocol == "anthropic":
                assert body["type"] == "error" and body["error"]["type"] == "authentication_error"


def test_garbage_body_is_not_json():
    with FakeLLMServer("ollama", "garbage") as server:
        response = httpx.post(f"{server.url}/api/chat", json={"model": "m"})
        assert response.status_code == 200
        assert response.text == GARBAGE_BODY


def test_model_listings():
    with FakeLLMServer("openai", models=["a", "b"]) as server:
        assert [m["id"] for m in httpx.get(f"{server.api_base}/models").json()["data"]] == ["a", "b"]
    with FakeLLMServer("ollama") as server:
        assert httpx.get(f"{server.url}/api/tags").json()["models"][0]["name"] == "fake-model"
        assert server.last_request["method"] == "GET" and server.last_request["path"] == "/api/tags"
        assert httpx.post(f"{server.url}/api/nope", json={}).status_code == 404


def test_stop_wakes_a_hanging_request():
    server = FakeLLMServer("openai", "hang", hang_s=30).start()
    errors: list[BaseException] = []

    def client():
        try:
            httpx.post(f"{server.api_base}/chat/completions", json={"model": "m"}, timeout=10)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    server.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - start < 2
    assert errors  # the connection was closed without an answer


def test_bad_arguments():
    with pytest.raises(ValueError):
        FakeLLMServer("cohere")
    with pytest.raises(ValueError):
        FakeLLMServer("openai", "418")
    server = FakeLLMServer("openai")
    with pytest.raises(ValueError):
        server.behaviour = "slow"
    server.behaviour = 429  # an int status is accepted too
    assert server.behaviour == "429"
