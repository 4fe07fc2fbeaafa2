"""Constrained decoding and tool calls on the tiny model, without the service: the grammar module's
mask, its refusals, the forced call's grammar, the parser that reads calls back, and the template."""

import json

import jsonschema
import mlx.core as mx
import pytest

from workbench.errors import InputError
from workbench.providers.engine import LocalEngine
from workbench.providers.grammar import GrammarCompiler, lark_grammar, schema_grammar
from workbench.providers.streams import GenerationRequest
from workbench.providers.tools import (
    NamedToolChoice,
    Tool,
    check_tool_choice,
    forced_call_lark,
    parse_tool_calls,
)

POINT = {"type": "object", "additionalProperties": False, "required": ["x", "y"],
         "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "boolean"}}}
ADD = Tool.model_validate({"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["a", "b"],
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                   "b": {"type": "integer", "minimum": 0, "maximum": 99}}}}})


@pytest.fixture(scope="module")
def engine(tiny):
    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer, prompt_cache_size=0)
    yield engine
    engine.close()


def chat(tokenizer, text, **extra):
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              **extra))


def test_the_first_mask_allows_only_what_starts_the_object(tiny):
    _, tokenizer = tiny
    process = GrammarCompiler(tokenizer).constraint(schema_grammar(POINT), "response_format").processor()
    logits = process(mx.array([1]), mx.zeros((1, 1200)))  # wider than the tokenizer, as padded models are
    allowed = [i for i, v in enumerate(logits[0].tolist()) if v == 0]
    assert allowed and all(tokenizer.decode([i]) in ("{", '{"') for i in allowed)
    assert max(allowed) < len(tokenizer.vocab)  # padding rows are never allowed


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_decoding_under_a_schema_gives_valid_json_and_ends_there(engine, temperature):
    constraint = GrammarCompiler(engine.tokenizer).constraint(schema_grammar(POINT), "response_format")
    prompts = [chat(engine.tokenizer, q) for q in ("A point?", "What colour is grass?", "Hello")]
    streams = engine.submit_all([GenerationRequest(p, max_tokens=60, temperature=temperature,
                                                   constraint=constraint) for p in prompts])
    for done in (s.wait() for s in streams):
        assert done.finish_reason == "stop"  # eos, once the object was complete
        jsonschema.validate(json.loads(done.text), POINT)


def test_a_schema_the_library_refuses_names_the_field_and_the_reason(tiny):
    compiler = GrammarCompiler(tiny[1])
    with pytest.raises(InputError) as caught:
        compiler.constraint(schema_grammar({"type": "object", "properties": {"a": {"type": "strin"}}}),
                            "response_format")
    assert caught.value.field == "response_format" and "strin" in caught.value.message


def test_a_forced_call_decodes_to_a_call_the_parser_reads_back(engine):
    tokenizer = engine.tokenizer
    lark = forced_call_lark([ADD], "required", tokenizer.tool_call_start, tokenizer.tool_call_end)
    constraint = GrammarCompiler(tokenizer).constraint(lark_grammar(lark), "tools")
    prompt = chat(tokenizer, "Add 2 and 3.", tools=[ADD.model_dump()])
    done = engine.generate(GenerationRequest(prompt, max_tokens=60, temperature=0.8, constraint=constraint))
    text, calls = parse_tool_calls(done.text, tokenizer, [ADD])
    assert text == "" and len(calls) == 1 and calls[0]["function"]["name"] == "add"
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), ADD.function.parameters)


def test_text_that_is_not_a_call_stays_text(tiny):
    _, tokenizer = tiny
    assert parse_tool_calls("Just words.", tokenizer, [ADD]) == ("Just words.", [])
    broken = "Here <tool_call>\n{not json\n</tool_call>"
    assert parse_tool_calls(broken, tokenizer, [ADD]) == (broken, [])


def test_tool_choice_must_name_a_given_function():
    check_tool_choice([ADD], "required")
    with pytest.raises(InputError) as caught:
        check_tool_choice([ADD], NamedToolChoice.model_validate({"type": "function", "function": {"name": "mul"}}))
    assert caught.value.field == "tool_choice" and "mul" in caught.value.message
    with pytest.raises(InputError):
        check_tool_choice(None, "required")


def test_the_tiny_template_renders_tools_and_keeps_plain_chats_chatml(tiny):
    _, tokenizer = tiny
    assert tokenizer.has_tool_calling and tokenizer.tool_call_start == "<tool_call>"
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    turn = [*plain, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"}]
    text = tokenizer.apply_chat_template(turn, tools=[ADD.model_dump()], tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n") and '"name": "add"' in text
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in text
    assert "<tool_response>\n5\n</tool_response>" in text
