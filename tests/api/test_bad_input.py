"""A request's own bad input is that request's 4xx, naming the field; it never takes generation down
for the next clients, and never costs the client its keep-alive connection."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from workbench.providers.params import MAX_PROMPT_CHARS, MAX_STOP_CHARS

CHAT = {"model": "tiny", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}
STRICT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{ raise_exception('the first message must be the system "
    "message') }}{%- endif %}{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' "
    "+ message['content'] + '<|im_end|>\\n' }}{%- endfor %}{{- '<|im_start|>assistant\\n' }}"
)


def raw_post(api, path: str, text: str):
    """POST a body as written: JSON that Python's json accepts but a client library would not send."""
    return api.post(path, data=text.encode(), headers={"content-type": "application/json"})


def field_named(response, field: str) -> bool:
    body = response.json()
    if "error" in body:  # /v1: OpenAI's shape
        return field in (body["error"]["param"] or "") or field in body["error"]["message"]
    return any(field in map(str, item["loc"]) for item in body["detail"])


def assert_local_mlx_answers_at_once(api):
    """The next good request on each generation endpoint is answered by local_mlx, first try."""
    for path, body in [("/generate", {"prompt": "The sky is", "max_tokens": 3}),
                       ("/generate/batch", {"prompts": ["The sky is", "Grass is"], "max_tokens": 3}),
                       ("/v1/chat/completions", CHAT)]:
        started = time.monotonic()
        response = api.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
        assert time.monotonic() - started < 10
        results = response.json() if isinstance(response.json(), list) else [response.json()]
        for result in results:
            assert result["provider_used"] == "local_mlx"
            if "attempts" in result:
                assert [a["outcome"] for a in result["attempts"]] == ["ok"]


@pytest.mark.parametrize("path, text, field", [
    ("/generate", '{"messages": [{"role": "user", "content": "\\udfff"}], "max_tokens": 3}', "content"),
    ("/generate", '{"prompt": "a \\ud800 b", "max_tokens": 3}', "prompt"),
    ("/generate/batch", '{"prompts": ["fine", "\\udfff"], "max_tokens": 3}', "prompts"),
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "\\udfff"}]}', "content"),
    ("/generate", json.dumps({"prompt": "word " * (MAX_PROMPT_CHARS // 5 + 1)}), "prompt"),
    ("/generate", json.dumps({"prompt": "word " * 5000, "max_tokens": 3}), "prompt"),
])
def test_a_request_s_own_bad_input_is_its_4xx_and_local_mlx_answers_the_next_at_once(api, path, text, field):
    response = raw_post(api, path, text)

    assert 400 <= response.status_code < 500, response.text
    assert field_named(response, field), response.text
    assert_local_mlx_answers_at_once(api)
    assert api.get("/providers").json()["local_mlx"]["health"]["cooling_down_until"] is None


def test_messages_the_chat_template_refuses_are_a_4xx_naming_messages(api, models_dir, tmp_path):
    strict = tmp_path / "strict"
    shutil.copytree(Path(models_dir) / "tiny", strict)
    config = json.loads((strict / "tokenizer_config.json").read_text())
    (strict / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": STRICT_TEMPLATE}))

    response = api.post("/generate", json={"model": str(strict), "messages": [{"role": "user", "content": "Hi"}]})

    assert response.status_code == 400, response.text
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "messages"] and "system message" in item["msg"]
    assert_local_mlx_answers_at_once(api)


@pytest.mark.parametrize("path, text, field", [
    ("/generate", '{"prompt": "Hi", "temperature": NaN}', "temperature"),
    ("/generate", '{"prompt": "Hi", "temperature": Infinity}', "temperature"),
    ("/generate", '{"prompt": "Hi", "top_p": -Infinity}', "top_p"),
    ("/generate", '{"prompt": "Hi", "temperature": 1e309}', "temperature"),
    ("/generate/batch", '{"prompts": ["Hi"], "temperature": NaN}', "temperature"),
    ("/generate", '{"prompt": "Hi", "temperature": "\\udfff"}', "temperature"),
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "top_p": NaN}', "top_p"),
    ("/v1/completions", '{"model": "tiny", "prompt": "Hi", "temperature": 1e309}', "temperature"),
    ("/providers/configure", '{"provider": "openai", "api_key": "sk-x", "timeout": NaN}', "timeout"),
    ("/providers/configure", '{"provider": "openai", "api_key": "sk-\\udfff"}', "api_key"),
    ("/train/start", '{"experiment_name": "nan_lr", "training_type": "lora", "dataset": "alpaca", "learning_rate": NaN}', "learning_rate"),
    ("/train/start", '{"experiment_name": "inf_wd", "training_type": "lora", "dataset": "alpaca", "weight_decay": Infinity}', "weight_decay"),
    ("/train/start", '{"experiment_name": "\\udfff", "training_type": "lora", "dataset": "alpaca"}', "experiment_name"),
    ("/v1/chat/completions", json.dumps(CHAT | {"stop": [""]}), "stop"),
    ("/v1/chat/completions", json.dumps(CHAT | {"stop": ["x" * (MAX_STOP_CHARS + 1)]}), "stop"),
    ("/generate", json.dumps({"prompt": "Hi", "stop": ["x" * (MAX_STOP_CHARS + 1)] * 4}), "stop"),
    ("/v1/chat/completions", json.dumps(CHAT | {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}), "text"),
    ("/v1/completions", '{"model": "tiny", "prompt": "Hi", "n": 17}', "n"),
])
def test_what_json_should_not_carry_is_a_4xx_naming_the_field_on_the_same_connection(api, path, text, field):
    url = urlparse(api.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request("POST", path, body=text.encode(), headers={"content-type": "application/json"})
        first = connection.getresponse()
        body = first.read()
        socket_before = connection.sock.getsockname() if connection.sock else None

        connection.request("GET", "/health")
        after = connection.getresponse()
        after.read()

        assert 400 <= first.status < 500, body
        assert first.getheader("content-type") == "application/json"
        response = type("R", (), {"json": lambda self: json.loads(body)})()
        assert field_named(response, field), body
        # No 500 and no reset: the same keep-alive connection answers the next request.
        assert socket_before is not None and connection.sock.getsockname() == socket_before
        assert after.status == 200
    finally:
        connection.close()


def test_a_body_over_the_limit_is_refused_with_413_as_it_arrives(api):
    started = time.monotonic()
    response = api.post("/generate", data=b"x" * (5 * 1024 * 1024), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert "WORKBENCH_MAX_BODY_BYTES" in response.json()["detail"][0]["msg"]
    assert time.monotonic() - started < 5


def test_a_chunked_body_over_the_limit_is_refused_too(api):
    def chunks():
        for _ in range(50):
            yield b"x" * (256 * 1024)

    response = api.post("/generate", data=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_long_prompt_is_refused_before_it_is_tokenized(api):
    started = time.monotonic()
    response = api.post("/generate", json={"prompt": "x" * (MAX_PROMPT_CHARS + 1)})

    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "prompt"] and str(MAX_PROMPT_CHARS) in item["msg"]
    assert len(json.dumps(item["input"])) < 300  # the refused prompt is not echoed back whole
    assert time.monotonic() - started < 2
