"""Tool calling: the OpenAI `tools` / `tool_choice` models, the grammar that forces a call, and the
calls read back from a local model's output with mlx-lm's tool parser for its family
(docs/architecture.md, "Tools and constrained decoding").
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.errors import InputError
from workbench.providers.grammar import MAX_SCHEMA_CHARS, _bounded_schema

MAX_TOOLS = 64
MAX_ARGUMENT_CHARS = MAX_SCHEMA_CHARS
FunctionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: FunctionName
    description: str | None = Field(default=None, max_length=4_000)
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None

    _bounded = field_validator("parameters")(_bounded_schema)


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: FunctionName


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: FunctionName
    arguments: str = Field(max_length=MAX_ARGUMENT_CHARS, description="The arguments, as a JSON string.")


class ToolCall(BaseModel):
    """One call, in OpenAI's shape; an assistant message carries them back on the next turn."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=128)
    type: Literal["function"] = "function"
    function: CalledFunction


def check_tool_choice(tools: list[Tool] | None, choice: ToolChoice | None) -> None:
    """A choice the tools cannot honour is the request's 400, naming `tool_choice`."""
    if choice is None or choice in ("auto", "none"):
        return
    if not tools:
        raise InputError("tool_choice", f"{_choice_text(choice)} needs `tools`; none were given")
    if isinstance(choice, NamedToolChoice):
        names = [t.function.name for t in tools]
        if choice.function.name not in names:
            raise InputError("tool_choice", f"names the function {choice.function.name!r}, which is not "
                             f"among the tools ({', '.join(names)})")


def _choice_text(choice: ToolChoice) -> str:
    return repr(choice) if isinstance(choice, str) else f"function {choice.function.name!r}"


def forced_call_lark(tools: list[Tool], choice: ToolChoice | None, start: str, end: str) -> str | None:
    """A Lark grammar for exactly one call in the model's own format (`start` JSON `end`), when
    `choice` forces one (`required` or a named function); None otherwise."""
    if choice is None or choice in ("auto", "none"):
        return None
    chosen = [t for t in tools if isinstance(choice, str) or t.function.name == choice.function.name]
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
              "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters}}
             for t in chosen]
    # Compact JSON (no blanks between tokens): a small model would otherwise fill them with newlines.
    schema = {"anyOf": calls, "x-guidance": {"whitespace_flexible": False}}
    head, tail = json.dumps(start + "\n"), json.dumps("\n" + end)
    return f"start: {head} call {tail}\ncall: %json {json.dumps(schema)}"


def template_tools(tools: list[Tool]) -> list[dict]:
    return [t.model_dump(exclude_none=True) for t in tools]


def template_message(message: dict) -> dict:
    """A chat message as chat templates read it: a call's arguments as an object, not a string."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    rendered = []
    for call in calls:
        function = dict(call["function"])
        try:
            function["arguments"] = json.loads(function["arguments"])
        except ValueError:
            pass  # the template shows the text as it came
        rendered.append({**call, "function": function})
    return {**message, "tool_calls": rendered}


def parse_tool_calls(text: str, tokenizer, tools: list[Tool]) -> tuple[str, list[dict]]:
    """The text outside tool calls, and the calls found in it (OpenAI's shape), read with the
    tokenizer's mlx-lm tool parser. A call that does not parse stays in the text, as the model wrote it."""
    start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
    spec = template_tools(tools)
    content, calls, rest = [], [], text
    while start in rest:
        before, _, after = rest.partition(start)
        body, found_end, rest = after.partition(end) if end else (after, "", "")
        try:
            parsed = tokenizer.tool_parser(body, spec)
        except Exception:
            content.append(before + start + body + found_end)
            continue
        content.append(before)
        for call in parsed if isinstance(parsed, list) else [parsed]:
            arguments = call.get("arguments", {})
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": call.get("name", ""),
                                       "arguments": arguments if isinstance(arguments, str)
                                       else json.dumps(arguments, ensure_ascii=False)}})
    content.append(rest)
    return "".join(content).strip() if calls else text, calls


# Remote providers: litellm carries tools, tool_choice and response_format to them, and their calls back.

def remote_tool_options(params) -> dict:
    """The OpenAI fields of `params` that litellm passes on to a remote provider."""
    options = {}
    if params.tools:
        options["tools"] = [t.model_dump(exclude_none=True) for t in params.tools]
    if params.tool_choice is not None:
        choice = params.tool_choice
        options["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
    if params.response_format is not None:
        options["response_format"] = params.response_format.model_dump(exclude_none=True)
    return options


def remote_tool_calls(calls) -> list[dict] | None:
    """litellm's tool calls (objects of OpenAI's shape) as plain dicts; None when there are none."""
    if not calls:
        return None
    return [{"id": c.id, "type": "function",
             "function": {"name": c.function.name, "arguments": c.function.arguments or ""}} for c in calls]


class ToolCallDeltas:
    """A streamed answer's tool calls, put together from OpenAI's deltas (id and name first, then
    pieces of the arguments, by index)."""

    def __init__(self):
        self._calls: dict[int, dict] = {}

    def add(self, deltas) -> None:
        for delta in deltas or []:
            call = self._calls.setdefault(getattr(delta, "index", 0) or 0, {
                "id": "", "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = getattr(delta, "id", None) or call["id"]
            function = getattr(delta, "function", None)
            if function is not None:
                call["function"]["name"] += getattr(function, "name", None) or ""
                call["function"]["arguments"] += getattr(function, "arguments", None) or ""

    def whole(self) -> list[dict] | None:
        return [self._calls[i] for i in sorted(self._calls)] or None
