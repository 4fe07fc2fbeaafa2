"""Tools and response_format over /v1 with the official openai client: even the tiny model answers
valid JSON for a schema, and a forced call with valid arguments, because decoding is constrained."""

import json

import jsonschema
import openai
import pytest

from tests.fakes.llm_servers import FakeLLMServer

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
    "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(api):
    return openai.OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_answer_parses_and_validates(api, temperature):
    reply = client(api).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Describe a person."}], temperature=temperature,
        max_tokens=120, response_format={"type": "json_schema",
                                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"  # the grammar ended the answer, not max_tokens
    jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_answer_is_held_to_json(api):
    # Any object: the tiny model never closes an open-ended string, so its answer runs to max_tokens.
    # What constrained decoding guarantees is the shape: an object, and JSON whenever it ends by itself.
    reply = client(api).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Give me JSON."}], temperature=0,
        max_tokens=40, response_format={"type": "json_object"},
    )
    choice = reply.choices[0]
    assert choice.message.content.startswith('{"')
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    plain = client(api).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Give me JSON."}], temperature=0, max_tokens=40)
    assert not plain.choices[0].message.content.startswith("{")  # the format, not the model, made it JSON


def test_text_completions_take_response_format_too(api):
    reply = client(api).completions.create(
        model="tiny", prompt="A person:", max_tokens=120, temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}})
    jsonschema.validate(json.loads(reply.choices[0].text), PERSON)


def test_generate_takes_response_format_too(api):
    answer = api.client().generate(_params(
        prompt="A person:", max_tokens=120, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}))
    jsonschema.validate(json.loads(answer.generated_text), PERSON)


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "get_weather"}}, "required"])
def test_forced_tool_call_has_valid_arguments(api, choice):
    reply = client(api).chat.completions.create(
        model="tiny", messages=ASK, tools=[TIME, WEATHER] if choice == "required" else [WEATHER],
        tool_choice=choice, temperature=0.7, max_tokens=120,
    )
    out = reply.choices[0]
    assert out.finish_reason == "tool_calls"
    (call,) = out.message.tool_calls
    assert call.type == "function" and call.id
    schema = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_agent_loop_second_turn_is_accepted_and_answered(api):
    first = client(api).chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=120)
    call = first.choices[0].message.tool_calls[0]
    turn = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    assert turn[1]["tool_calls"] and "content" not in turn[1]  # content null: the client leaves it out
    second = client(api).chat.completions.create(model="tiny", messages=turn, tools=[WEATHER],
                                                 temperature=0, max_tokens=16)
    out = second.choices[0]
    assert out.finish_reason in ("stop", "length", "tool_calls")
    assert out.message.content or out.message.tool_calls
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result were rendered


def test_streamed_tool_call_chunks_reassemble(api):
    stream = client(api).chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice={"type": "function",
                                                                   "function": {"name": "get_weather"}},
        temperature=0.7, max_tokens=120, stream=True,
    )
    calls, finish = {}, None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = part.id or entry["id"]
            entry["name"] += (part.function.name or "") if part.function else ""
            entry["arguments"] += (part.function.arguments or "") if part.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


def test_bad_schema_is_a_400_naming_response_format(api):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "strin"}}}}}
    answer = api.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "response_format": bad})
    assert answer.status_code == 400, answer.text
    assert "response_format" in answer.text and "strin" in answer.text


def test_oversized_schema_is_refused(api):
    huge = {"type": "object", "properties": {f"field{i}": {"type": "string"} for i in range(3000)}}
    answer = api.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": huge}}})
    assert 400 <= answer.status_code < 500 and "at most" in answer.text


def test_tool_choice_naming_an_unknown_function_is_a_400(api):
    answer = api.post("/v1/chat/completions", json={
        "model": "tiny", "messages": ASK, "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "launch_rocket"}}})
    assert answer.status_code == 400, answer.text
    assert "tool_choice" in answer.text and "launch_rocket" in answer.text


@pytest.mark.parametrize("stream", [False, True])
def test_a_remote_provider_gets_the_tools_and_its_calls_come_back(api, stream):
    with FakeLLMServer("openai") as server:
        configured = api.post("/providers/configure", json={
            "provider": "openai", "model": "fake-model", "api_key": "sk-test", "api_base": server.api_base})
        assert configured.status_code == 200, configured.text
        try:
            reply = client(api).chat.completions.create(
                model="openai", messages=ASK, tools=[WEATHER], stream=stream,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                response_format={"type": "json_object"})
            if stream:
                parts = [c.choices[0].delta for c in reply if c.choices]
                calls = [t for d in parts for t in d.tool_calls or []]
                name = "".join(t.function.name or "" for t in calls)
                arguments = "".join(t.function.arguments or "" for t in calls)
            else:
                (call,) = reply.choices[0].message.tool_calls
                name, arguments = call.function.name, call.function.arguments
                assert reply.choices[0].finish_reason == "tool_calls"
        finally:
            api.delete("/providers/openai")
    sent = server.requests_to("/chat/completions")[-1]["json"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["response_format"] == {"type": "json_object"}
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}


def _params(**fields):
    from workbench.providers.params import GenerateParams

    return GenerateParams(model="tiny", **fields)
