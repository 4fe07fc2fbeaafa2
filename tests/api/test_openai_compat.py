"""The workbench speaks OpenAI's protocol: the official client and litellm use it as they would OpenAI."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
import openai  # noqa: E402


def client(api):
    return openai.OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_local_model(api):
    ids = [m.id for m in client(api).models.list().data]
    assert "tiny" in ids and "auto" in ids


def test_official_client_chat_completion(api):
    reply = client(api).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What colour is grass?"}], temperature=0
    )
    assert reply.choices[0].message.content.strip() == "Grass is green."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0


def test_official_client_streams(api):
    stream = client(api).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What do bees make?"}], temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "Bees make honey and wax."
    assert chunks[-1].usage.completion_tokens > 0


def test_official_client_text_completion(api):
    whole = client(api).completions.create(model="tiny", prompt="The sky is", max_tokens=6, temperature=0)
    pieces = client(api).completions.create(model="tiny", prompt="The sky is", max_tokens=6, temperature=0,
                                            stream=True)
    streamed = "".join(c.choices[0].text for c in pieces)
    assert whole.choices[0].text == streamed and streamed.startswith(" ")
    assert whole.choices[0].finish_reason == "length"


def test_litellm_openai_provider_uses_the_workbench(api):
    reply = litellm.completion(
        model="openai/tiny", api_base=api.url + "/v1", api_key="unused",
        messages=[{"role": "user", "content": "What colour is grass?"}], temperature=0, max_retries=0,
    )
    assert reply.choices[0].message.content.strip() == "Grass is green."

    pieces = litellm.completion(
        model="openai/tiny", api_base=api.url + "/v1", api_key="unused", stream=True, max_retries=0,
        messages=[{"role": "user", "content": "What colour is grass?"}], temperature=0,
    )
    assert "".join(c.choices[0].delta.content or "" for c in pieces).strip() == "Grass is green."


def test_an_unknown_model_is_a_404_the_client_reports(api):
    try:
        client(api).chat.completions.create(model="nobody/none", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as exc:
        assert "model" in str(exc)
    else:
        raise AssertionError("expected a 404")
