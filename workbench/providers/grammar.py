"""Constrained decoding: a grammar (a JSON schema, any JSON, or a forced tool call) turned into a
logits mask for each generated token, with llguidance (docs/architecture.md, "Constrained decoding").

A `Constraint` is compiled and checked once per request, in the request's thread, so a bad schema is
that request's 400 before the engine sees it. The engine asks it for a fresh `processor()` when the
request joins the batch: a logits processor that advances its own matcher with each sampled token
and leaves only the tokens the grammar allows, eos included once the grammar is complete, so the
answer ends exactly where the JSON does.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import llguidance
import llguidance.hf
import llguidance.numpy as llnumpy
import mlx.core as mx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.errors import InputError

MAX_SCHEMA_CHARS = 32_000  # a schema's JSON text; the grammar it compiles to grows with it

# Compact JSON: no whitespace between tokens, so a small model cannot spend its tokens on blanks.
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _bounded_schema(value: dict) -> dict:
    size = len(json.dumps(value))
    if size > MAX_SCHEMA_CHARS:
        raise ValueError(f"the schema is {size} characters of JSON; at most {MAX_SCHEMA_CHARS}")
    return value


class JSONSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, serialize_by_alias=True)

    name: str = Field(default="response", max_length=64)
    description: str | None = Field(default=None, max_length=4_000)
    # `schema` shadows a BaseModel attribute, hence the alias.
    json_schema: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    _bounded = field_validator("json_schema")(_bounded_schema)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JSONObjectFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[TextFormat | JSONObjectFormat | JSONSchemaFormat, Field(discriminator="type")]


def schema_grammar(schema: dict | None) -> str:
    """llguidance's grammar for JSON matching `schema` (any JSON object when None)."""
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema or {"type": "object"}, overrides=_COMPACT)
    except ValueError as exc:
        raise InputError("response_format", f"the grammar library refuses the schema: {exc}") from None


def format_grammar(response_format) -> str | None:
    """The grammar a response_format asks for; None for plain text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return schema_grammar(None)
    return schema_grammar(response_format.json_schema.json_schema)


def lark_grammar(lark: str) -> str:
    return llguidance.LLMatcher.grammar_from_lark(lark)


class Constraint:
    """A checked grammar for one tokenizer; each `processor()` decodes one answer under it."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, eos: list[int]):
        self.tokenizer = tokenizer
        self.grammar = grammar
        self.eos = eos

    def processor(self):
        matcher = llguidance.LLMatcher(self.tokenizer, self.grammar)
        bitmask = llnumpy.allocate_token_bitmask(1, self.tokenizer.vocab_size)
        eos = list(self.eos)
        started = False

        def process(tokens: mx.array, logits: mx.array) -> mx.array:
            nonlocal started
            # The first call sees the prompt's last token; each later one the token sampled last.
            if started:
                matcher.consume_token(int(tokens[-1].item()))
            started = True
            llnumpy.fill_next_token_bitmask(matcher, bitmask, 0)
            allowed = np.unpackbits(bitmask.view(np.uint8), count=self.tokenizer.vocab_size,
                                    bitorder="little").astype(bool)
            if not allowed.any():  # a schema nothing can satisfy, or a matcher in error: end the answer
                allowed[eos] = True
            width = logits.shape[-1]
            # A model's vocabulary may be padded past its tokenizer's: those rows are never allowed.
            allowed = np.pad(allowed, (0, max(width - allowed.size, 0)))[:width]
            return mx.where(mx.array(allowed), logits, -mx.inf)

        return process


class GrammarCompiler:
    """llguidance's view of one model's tokenizer (built once per loaded model), and the checks that
    turn a grammar into a Constraint or into the request's 400 naming `field`."""

    def __init__(self, tokenizer):
        hf = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx-lm's TokenizerWrapper holds the HF one
        self.eos = sorted(getattr(tokenizer, "eos_token_ids", None) or [hf.eos_token_id])
        self.tokenizer = llguidance.hf.from_tokenizer(hf, eos_token=self.eos)

    def constraint(self, grammar: str, field: str) -> Constraint:
        error = llguidance.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise InputError(field, f"the grammar library refuses it: {error.splitlines()[0][:300]}")
        return Constraint(self.tokenizer, grammar, self.eos)

