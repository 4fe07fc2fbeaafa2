"""Preference rows: a prompt (text) or a chat, then a `chosen` and a `rejected` answer.

What DPO and ORPO train on (docs/architecture.md, "Preference training"). A row is read as TRL's
and mlx-lm-lora's preference sets write it:

    {"prompt": "...", "chosen": "...", "rejected": "..."}
    {"messages": [{"role": "user", "content": "..."}], "chosen": {...assistant message}, "rejected": ...}

`chat` is read like `messages`; an answer is a text, an assistant message, or a list holding one
(TRL's conversational form). Rows are converted to `{"messages", "chosen", "rejected"}` (the prompt as
chat messages, the answers as text), then tokenised into pairs of mlx-lm chat items, each answer
rendered after the prompt with the model's chat template and its prompt masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workbench.data.formats import BadRow, _keys, _kind, _mapping, _text, role_and_content

PROMPT_KEYS = ("prompt", "messages", "chat")


def _answer(row: Mapping, key: str) -> str:
    """An answer: a text, an assistant message, or a list of one assistant message."""
    if key not in row or row[key] is None:
        raise BadRow(f"missing key {key!r} (the row has {_keys(row)})")
    value = row[key]
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 1:
            raise BadRow(f"{key!r} as a list must hold one assistant message, got {len(value)} items")
        value = value[0]
    if isinstance(value, Mapping):
        if value.get("role", "assistant") != "assistant":
            raise BadRow(f"{key!r} must be an assistant message, not {value.get('role')!r}")
        value = value.get("content")
        if not isinstance(value, str):
            raise BadRow(f"{key!r} needs a string 'content', got {_kind(value)}")
    if not isinstance(value, str):
        raise BadRow(f"{key!r} must be a string or an assistant message, got {_kind(value)}")
    if not value.strip():
        raise BadRow(f"{key!r} is empty")
    return value


def _prompt(row: Mapping) -> list[dict[str, str]]:
    """The conversation before the answers, as chat messages."""
    key = next((k for k in PROMPT_KEYS if row.get(k) is not None), None)
    if key is None:
        raise BadRow(f"missing the prompt: one of {', '.join(map(repr, PROMPT_KEYS))} (the row has "
                     f"{_keys(row)})")
    if key == "prompt":
        return [{"role": "user", "content": _text(row, "prompt")}]
    turns = row[key]
    if not isinstance(turns, Sequence) or isinstance(turns, str) or not turns:
        raise BadRow(f"{key!r} must be a non-empty list of messages, got {_kind(turns)}")
    messages = []
    for i, message in enumerate(turns, 1):
        role, content = role_and_content(message, i, f" of {key!r}")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] == "assistant":
        raise BadRow(f"{key!r} must end before the answer (with a user message), not with an assistant one")
    return messages


def preference_row(row: Any) -> dict:
    """{"messages": the prompt, "chosen": text, "rejected": text}, checked."""
    row = _mapping(row)
    return {"messages": _prompt(row), "chosen": _answer(row, "chosen"), "rejected": _answer(row, "rejected")}


def is_preference(row: Any) -> bool:
    return isinstance(row, Mapping) and "chosen" in row and "rejected" in row


def conversation(row: dict, answer: str = "chosen") -> list[dict[str, str]]:
    """The prompt followed by one answer, as chat messages."""
    return [*row["messages"], {"role": "assistant", "content": row[answer]}]


class PairDataset:
    """Converted preference rows as pairs of mlx-lm chat items: ((chosen tokens, prompt length),
    (rejected tokens, prompt length)), each cut to max_seq_length, tokenised once and cached."""

    def __init__(self, rows: list[dict], tokenizer, max_seq_length: int):
        from mlx_lm.tuner.datasets import ChatDataset

        self._rows = rows
        self._chat = ChatDataset([], tokenizer, chat_key="messages", mask_prompt=True)
        self.max_seq_length = max_seq_length
        self._cache: dict[int, tuple] = {}

    def _item(self, row: dict, answer: str) -> tuple[list[int], int]:
        tokens, offset = self._chat.process({"messages": conversation(row, answer)})
        return tokens[: self.max_seq_length], min(offset, self.max_seq_length)

    def __getitem__(self, idx: int) -> tuple:
        if idx not in self._cache:
            row = self._rows[idx]
            self._cache[idx] = (self._item(row, "chosen"), self._item(row, "rejected"))
        return self._cache[idx]

    def __len__(self) -> int:
        return len(self._rows)
