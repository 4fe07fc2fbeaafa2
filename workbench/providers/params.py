"""What a generation request may ask for, validated once for the service, the notebooks and code."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.errors import InputError
from workbench.providers.grammar import ResponseFormat
from workbench.providers.tools import (
    MAX_TOOLS,
    Tool,
    ToolCall,
    ToolChoice,
    check_tool_choice,
    template_message,
)

# Bounds checked by pydantic, before any tokenizing: a 10 MB prompt took 9 s to refuse once it was
# tokenized, and four 10 MB stop strings stalled the shared engine for 11 s. They are declared in the
# OpenAPI schema, so a client generated from it knows them.
MAX_STOPS = 4
MAX_STOP_CHARS = 256
MAX_PROMPT_CHARS = 400_000  # about 100k tokens, past any local model's context
MAX_MESSAGES = 1_000
MAX_MODEL_NAME_CHARS = 1_024
# Scoring (docs/architecture.md, "Scoring and log-probabilities").
MAX_TOP_LOGPROBS = 20
MAX_SEED = 2**63 - 1
MAX_PROMPT_TOKENS = 100_000  # about MAX_PROMPT_CHARS's worth

StopText = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
StopList = Annotated[list[StopText], Field(max_length=MAX_STOPS)]

ProviderName = Literal["openai", "anthropic", "together", "ollama", "local_mlx"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                                description="May be null only on an assistant message with tool_calls.")
    # An agent loop's turns (tools.py): the calls an assistant made, and a tool's answer to one.
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _content_or_calls(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content (null only beside tool_calls)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def template_dict(self) -> dict:
        """The message as chat templates read it."""
        return template_message(self.model_dump(exclude_none=True) | {"content": self.content})


class SamplingParams(BaseModel):
    """Shared by one generation and a batch."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(
        default=128, ge=1, description="Most tokens to generate; capped at the server's limit."
    )
    min_tokens: int = Field(
        default=1, ge=0, description="Tokens generated before eos may end the answer (no empty answers)."
    )
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="0 is greedy (deterministic).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop: StopText | StopList = Field(
        default_factory=list,
        description=f"A string or up to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters; "
        "generation ends before the first one it produces.",
    )
    model: str | None = Field(
        default=None,
        max_length=MAX_MODEL_NAME_CHARS,
        description="The local model (the default model if omitted). Remote providers answer with "
        "the model they were configured with.",
    )
    provider: ProviderName | None = Field(
        default=None, description="Ask this provider only; without it the fallback chain is walked."
    )

    @model_validator(mode="after")
    def _min_within_max(self):
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})")
        return self

    @field_validator("stop")
    @classmethod
    def _check_stops(cls, value: str | list[str]) -> list[str]:
        value = [value] if isinstance(value, str) else value
        if len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences, got {len(value)}")
        if any(not s for s in value):
            raise ValueError("stop sequences must not be empty strings")
        return value


class GenerateParams(SamplingParams):
    """One generation, from a prompt (plain completion) or chat messages (chat template applied)."""

    prompt: str | None = Field(
        default=None, min_length=1, max_length=MAX_PROMPT_CHARS, description="Text to continue."
    )
    messages: list[ChatMessage] | None = Field(
        default=None, min_length=1, max_length=MAX_MESSAGES,
        description=f"A chat; the model answers as the assistant. At most {MAX_PROMPT_CHARS} "
        "characters of content in all.",
    )
    stream: bool = Field(default=False, description="Answer with server-sent events as text arrives.")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED,
        description="Sample with a generator of this seed: the same seed and parameters give the same "
        "text (local models; passed on to remote providers).",
    )
    logprobs: int | None = Field(
        default=None, ge=0, le=MAX_TOP_LOGPROBS,
        description="Answer each generated token's log-probability and this many most likely "
        f"alternatives (0 to {MAX_TOP_LOGPROBS}; local models only).",
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="OpenAI's: text, json_object or json_schema; the local engine enforces "
        "JSON by constrained decoding."
    )
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS,
                                     description="Functions the model may call (with messages only).")
    tool_choice: ToolChoice | None = Field(
        default=None, description="auto, none, required, or {type: function, function: {name}}: the last "
        "two force a call, decoded under the function's parameter schema."
    )

    def check_tools(self) -> None:
        """The tools and tool_choice fit together (else a 400 naming the field); asked before any
        provider is, so a remote one is never blamed for the request's mistake."""
        if self.tools and self.messages is None:
            raise InputError("tools", "tools need messages (a chat), not a prompt")
        check_tool_choice(self.tools, self.tool_choice)

    @model_validator(mode="after")
    def _prompt_or_messages(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None:
            total = sum(len(m.content or "") for m in self.messages)
            if total > MAX_PROMPT_CHARS:
                raise ValueError(f"messages hold {total} characters; at most {MAX_PROMPT_CHARS}")
        return self


class BatchGenerateParams(SamplingParams):
    prompts: list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]] = Field(
        min_length=1, max_length=64, description="Prompts, answered together."
    )

    @field_validator("prompts")
    @classmethod
    def _no_empty_prompt(cls, value: list[str]) -> list[str]:
        empty = [i for i, p in enumerate(value) if not p]
        if empty:
            raise ValueError(f"prompts at positions {empty} are empty")
        return value


class CompletionParams(GenerateParams):
    """One choice of OpenAI's legacy completions: a text or token-id prompt, which may be scored
    (`echo`) with or without a continuation (`max_tokens` 0: scoring only)."""

    max_tokens: int = Field(default=128, ge=0,
                            description="Most tokens to generate; 0 with echo scores only.")
    prompt_tokens: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=1, max_length=MAX_PROMPT_TOKENS,
        description="The prompt as token ids of the model's vocabulary, in place of `prompt`.",
    )
    echo: bool = Field(default=False, description="Score the prompt's own tokens too.")

    @model_validator(mode="after")
    def _prompt_or_messages(self):
        if self.messages is not None or (self.prompt is None) == (self.prompt_tokens is None):
            raise ValueError("give exactly one of prompt or prompt_tokens (no messages)")
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 generates nothing: it needs echo (scoring the prompt)")
        return self
