"""/v1 scoring and sampling options over HTTP: token-id and listed prompts, echo with logprobs in
OpenAI's legacy shape, max_tokens 0, n, seed; chat logprobs; /generate's seed and logprobs."""

import json
import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import openai  # noqa: E402

from tests.api.test_bad_input import field_named  # noqa: E402


def _ids(api, text: str) -> list[int]:
    from transformers import AutoTokenizer

    folder = api.post("/generate", json={"prompt": "x", "max_tokens": 1}).json()["model_path"]
    return AutoTokenizer.from_pretrained(folder).encode(text)


def test_echo_with_logprobs_scores_token_id_prompts_in_the_legacy_shape(api):
    prompts = [_ids(api, "The sky is blue."), _ids(api, "Grass is green and the sun is"), _ids(api, "Bees")]
    reply = api.post("/v1/completions", json={"model": "tiny", "prompt": prompts, "echo": True,
                                              "max_tokens": 0, "logprobs": 2, "temperature": 0})
    assert reply.status_code == 200, reply.text
    choices = reply.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    for prompt, choice in zip(prompts, choices):
        scores = choice["logprobs"]
        assert len(scores["tokens"]) == len(scores["token_logprobs"]) == len(prompt)
        assert scores["token_logprobs"][0] is None and scores["top_logprobs"][0] is None
        assert all(lp < 0 for lp in scores["token_logprobs"][1:])
        assert all(len(top) == 2 for top in scores["top_logprobs"][1:])
        assert choice["text"] == "".join(scores["tokens"])
        assert scores["text_offset"][1] == len(scores["tokens"][0])

    # Each prompt's scores are its own: asked alone, the same numbers come back.
    alone = api.post("/v1/completions", json={"model": "tiny", "prompt": prompts[1], "echo": True,
                                              "max_tokens": 0, "logprobs": 1}).json()
    together = choices[1]["logprobs"]["token_logprobs"]
    assert alone["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(together, abs=1e-4)


def test_echo_with_one_generated_token_as_lm_eval_asks(api):
    prompt = _ids(api, "What is 2 plus 2? 2 plus 2 is")
    reply = api.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "echo": True, "max_tokens": 1,
                                              "logprobs": 1, "temperature": 0, "seed": 1234})
    assert reply.status_code == 200, reply.text
    scores = reply.json()["choices"][0]["logprobs"]
    assert len(scores["token_logprobs"]) == len(prompt) + 1
    # The generated token was greedy: its logprob is the best one there.
    last_top = scores["top_logprobs"][-1]
    assert scores["token_logprobs"][-1] == pytest.approx(max(last_top.values()))


def test_listed_prompts_with_n_and_seed_are_indexed_as_openai_does(api):
    body = {"model": "tiny", "prompt": ["Once upon a time", "The cat"], "n": 2, "max_tokens": 12,
            "temperature": 1.2, "seed": 5}
    first = api.post("/v1/completions", json=body)
    assert first.status_code == 200, first.text
    choices = first.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    again = api.post("/v1/completions", json=body).json()["choices"]
    assert [c["text"] for c in again] == [c["text"] for c in choices]  # same seed, same text
    other = api.post("/v1/completions", json=body | {"seed": 6}).json()["choices"]
    assert [c["text"] for c in other] != [c["text"] for c in choices]
    usage = first.json()["usage"]
    # Each prompt counted once, though two choices continue it.
    assert usage["prompt_tokens"] == len(_ids(api, "Once upon a time")) + len(_ids(api, "The cat"))
    assert usage["completion_tokens"] > 0


@pytest.mark.parametrize("body, field", [
    ({"prompt": [[1, 2, 10**9]]}, "prompt"),
    ({"prompt": [[1, -2]]}, "prompt"),
    ({"prompt": ["text", [1, 2]]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": ["x"] * 65}, "prompt"),
    ({"prompt": "Hi", "max_tokens": 0}, "echo"),
    ({"prompt": "Hi", "logprobs": 21}, "logprobs"),
    ({"prompt": ["a"] * 64, "n": 3}, "n"),
    ({"prompt": "Hi", "n": 2, "stream": True}, "n"),
    ({"prompt": "Hi", "echo": True, "stream": True}, "echo"),
    ({"prompt": "Hi", "logprobs": 1, "stream": True}, "logprobs"),
    ({"prompt": ["a", "b"], "stream": True}, "prompt"),
])
def test_what_completions_cannot_do_is_a_4xx_naming_the_field(api, body, field):
    reply = api.post("/v1/completions", json={"model": "tiny"} | body)
    assert 400 <= reply.status_code < 500, reply.text
    assert field_named(reply, field), reply.text


def test_chat_logprobs_seed_and_n_through_the_official_client(api):
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "What colour is grass?"}]}
    reply = client.chat.completions.create(**ask, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    tokens = [t.token for t in content]
    assert reply.choices[0].finish_reason == "stop" and tokens[-1] == "<|im_end|>"  # eos is scored too
    assert "".join(tokens[:-1]).strip() == reply.choices[0].message.content.strip()
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert bytes(t.bytes).decode() == t.token

    sampled = dict(ask, temperature=1.5, max_tokens=16, seed=3, n=3)
    first = client.chat.completions.create(**sampled)
    assert [c.index for c in first.choices] == [0, 1, 2]
    again = client.chat.completions.create(**sampled)
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]


def test_generate_takes_seed_and_logprobs(api):
    body = {"prompt": "Once upon a time", "max_tokens": 10, "min_tokens": 10, "temperature": 1.5, "seed": 42,
            "logprobs": 2}
    first = api.post("/generate", json=body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert api.post("/generate", json=body).json()["generated_text"] == answer["generated_text"]
    assert len(answer["logprobs"]) == 10
    assert "".join(t["token"] for t in answer["logprobs"]) == answer["generated_text"]
    assert all(len(t["top_logprobs"]) == 2 for t in answer["logprobs"])
    assert "prompt_logprobs" not in answer


def test_a_remote_provider_gets_the_seed_and_says_it_gives_no_logprobs(api):
    from tests.fakes.llm_servers import FakeLLMServer

    with FakeLLMServer("openai", reply_text="remote words") as server:
        configured = api.post("/providers/configure", json={"provider": "openai", "model": "fake-model",
                                                            "api_key": "sk-test-123", "api_base": server.api_base})
        assert configured.status_code == 200, configured.text
        try:
            reply = api.post("/v1/chat/completions", json={
                "model": "openai", "messages": [{"role": "user", "content": "Hi"}], "seed": 7, "n": 2,
                "logprobs": True,
            })
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            assert [c["message"]["content"] for c in answer["choices"]] == ["remote words"] * 2
            assert sorted(r["json"]["seed"] for r in server.requests_to("/chat/completions")) == [7, 8]
            assert any("logprobs" in w for w in answer["warnings"])
            refused = api.post("/v1/completions", json={"model": "openai", "prompt": [[1, 2, 3]]})
            assert refused.status_code == 400 and field_named(refused, "prompt"), refused.text
        finally:
            api.delete("/providers/openai")


def test_a_token_id_prompt_streams_the_text_it_answers_whole(api):
    body = {"model": "tiny", "prompt": _ids(api, "The sun rises in the"), "max_tokens": 8, "temperature": 0}
    whole = api.post("/v1/completions", json=body).json()["choices"][0]["text"]
    streamed = api.post("/v1/completions", json=body | {"stream": True})
    assert streamed.status_code == 200, streamed.text
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole and whole
