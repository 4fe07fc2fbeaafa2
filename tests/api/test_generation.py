"""The plan's phase 4 (generation), streaming, bad input and concurrent requests."""

import concurrent.futures
import json

import pytest


def test_basic_generation(api):
    response = api.post("/generate", json={"prompt": "Hello, how are you today?", "max_tokens": 20,
                                           "temperature": 0.7})
    assert response.status_code == 200
    result = response.json()
    assert "generated_text" in result
    assert result["provider_used"] == "local_mlx"
    assert len(result["generated_text"]) > 0
    assert 1 <= result["completion_tokens"] <= 20
    assert result["total_tokens"] == result["prompt_tokens"] + result["completion_tokens"]


@pytest.mark.parametrize("case", [
    {"prompt": "The sky is", "temperature": 0.1, "max_tokens": 10},
    {"prompt": "The sky is", "temperature": 1.5, "max_tokens": 10},
    {"prompt": "Tell me a story", "max_tokens": 50},
    {"prompt": "Count: 1, 2, 3,", "stop": [","], "max_tokens": 20},
])
def test_generation_parameters(api, case):
    response = api.post("/generate", json=case)
    assert response.status_code == 200
    result = response.json()
    assert "generated_text" in result
    assert result["completion_tokens"] <= case["max_tokens"]
    for stop in case.get("stop", []):
        assert stop not in result["generated_text"]


def test_greedy_generation_repeats_and_stops_where_asked(api):
    body = {"prompt": "Paris is the capital of", "temperature": 0, "max_tokens": 12, "min_tokens": 12}
    full = api.post("/generate", json=body).json()["generated_text"]
    assert api.post("/generate", json=body).json()["generated_text"] == full

    stop = full.split()[2]
    cut = api.post("/generate", json=body | {"stop": stop}).json()
    assert cut["generated_text"] == full[: full.index(stop)]
    assert cut["finish_reason"] == "stop"


def test_chat_messages_use_the_chat_template(api):
    result = api.post("/generate", json={
        "messages": [{"role": "user", "content": "What colour is grass?"}],
        "temperature": 0, "max_tokens": 30,
    }).json()
    assert result["generated_text"].strip() == "Grass is green."
    assert result["finish_reason"] == "stop"


def test_batch_generation(api):
    batch = {"prompts": ["What is the capital of France?", "Explain quantum physics",
                         "Write a haiku about coding"], "max_tokens": 30, "temperature": 0.7}
    response = api.post("/generate/batch", json=batch)
    assert response.status_code == 200
    results = response.json()
    assert len(results) == 3
    for prompt, result in zip(batch["prompts"], results):
        assert result["prompt"] == prompt
        assert "generated_text" in result
        assert result["completion_tokens"] <= 30


def test_streaming_sends_text_as_it_comes_then_the_whole_answer(api):
    response = api.post("/generate", json={"prompt": "Once upon a time", "max_tokens": 15,
                                           "temperature": 0, "stream": True}, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))

    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds[:-1] == ["token"] * (len(kinds) - 1) and len(kinds) > 2
    done = events[-1][1]
    assert "".join(data["text"] for _, data in events[:-1]) == done["generated_text"]
    assert done["provider_used"] == "local_mlx"


def test_an_alias_shows_the_folder_actually_used(api):
    result = api.post("/generate", json={"prompt": "Hi", "max_tokens": 3,
                                         "model": "mlx-community/Qwen3-1.7B-8bit"}).json()
    assert result["model"] == "mlx-community/Qwen3-1.7B-8bit"
    assert result["model_path"].endswith("/tiny")


def test_huge_max_tokens_is_capped_and_said_so(api):
    result = api.post("/generate", json={"prompt": "Hi", "max_tokens": 10**9, "temperature": 0}).json()
    assert result["warnings"] and "capped" in result["warnings"][0]
    assert result["completion_tokens"] <= 2048


@pytest.mark.parametrize("body, field", [
    ({"prompt": "", "max_tokens": 5}, "prompt"),
    ({"prompt": "Hi", "max_tokens": -3}, "max_tokens"),
    ({"prompt": "Hi", "max_tokens": "ten"}, "max_tokens"),
    ({"prompt": "Hi", "temperature": 2.5}, "temperature"),
    ({"prompt": "Hi", "temperature": -1}, "temperature"),
    ({"prompt": "Hi", "top_p": 0}, "top_p"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "Hi", "stop": [""]}, "stop"),
    ({"prompt": "Hi", "model": "nonexistent/model"}, "model"),
    ({"prompt": "Hi", "max_tokes": 5}, "max_tokes"),
    ({"prompts": [], "max_tokens": 5}, "prompts"),
])
def test_bad_input_is_a_4xx_naming_the_field(api, body, field):
    path = "/generate/batch" if "prompts" in body else "/generate"
    response = api.post(path, json=body)
    assert response.status_code in (400, 422), response.text
    detail = response.json()["detail"]
    assert any(field in item["loc"] for item in detail), detail
    assert all(item["msg"] for item in detail)


def test_neither_or_both_of_prompt_and_messages_is_refused(api):
    for body in ({"max_tokens": 5}, {"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]}):
        response = api.post("/generate", json=body)
        assert response.status_code == 422
        assert "prompt or messages" in response.text


def test_not_json_is_a_4xx(api):
    response = api.post("/generate", data="{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_concurrent_generation(api):
    def make_request(i):
        return api.post("/generate", json={"prompt": f"Request {i}: Tell me about AI", "max_tokens": 20})

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(make_request, range(5)))

    assert [r.status_code for r in responses] == [200] * 5
    assert all(r.json()["generated_text"] for r in responses)


def test_the_service_still_answers_after_bad_requests(api):
    api.post("/generate", json={"prompt": "Hi", "model": "nonexistent/model"})
    api.post("/generate", json={"prompt": ""})
    assert api.post("/generate", json={"prompt": "The sky is", "max_tokens": 5}).status_code == 200


def test_the_next_chat_turn_is_served_from_the_prompt_cache_and_status_says_so(api):
    def cached_tokens():
        models = api.get("/status").json()["server_info"]["loaded_models"]
        return sum(m["engine"]["cached_prompt_tokens"] for m in models)

    history = [{"role": "user", "content": "What colour is grass? Please answer in a few words."}]
    first = api.post("/generate", json={"messages": history, "temperature": 0, "max_tokens": 30}).json()
    history += [{"role": "assistant", "content": first["generated_text"]},
                {"role": "user", "content": "What colour is the sky?"}]
    before = cached_tokens()

    second = api.post("/generate", json={"messages": history, "temperature": 0, "max_tokens": 30})

    assert second.status_code == 200 and second.json()["generated_text"]
    assert cached_tokens() - before >= first["prompt_tokens"]


def test_the_service_log_has_a_line_a_request_not_litellm_s_chatter(api):
    for _ in range(3):
        assert api.post("/generate", json={"prompt": "Hello", "max_tokens": 4}).status_code == 200
    log = api.log_text()
    assert log.count('"POST /generate HTTP/1.1" 200') >= 3
    assert "LiteLLM completion()" not in log and "Completed Call" not in log


def test_a_prompt_longer_than_the_model_takes_is_a_4xx_and_the_model_still_answers(api):
    response = api.post("/generate", json={"prompt": "word " * 5000, "max_tokens": 5})
    assert response.status_code == 400, response.text
    (item,) = response.json()["detail"]
    assert "prompt" in item["loc"] and "at most" in item["msg"]

    # The caller's mistake, not the local model's failure: no cooldown, the next request is answered.
    after = api.post("/generate", json={"prompt": "The sky is", "max_tokens": 5})
    assert after.status_code == 200 and after.json()["provider_used"] == "local_mlx"
    assert [a["outcome"] for a in after.json()["attempts"]] == ["ok"]
