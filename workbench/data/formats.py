"""Row formats: alpaca, sharegpt, chat, completions, text and preference, turned into what mlx-lm's
datasets take (preference rows: workbench/data/preference.py).

alpaca, sharegpt and chat rows become chat messages, `{"messages": [{"role", "content"}, ...]}`, which
mlx-lm's ChatDataset renders with the model's chat template; completions rows stay
`{"prompt", "completion"}` (CompletionsDataset) and text rows `{"text"}` (TextDataset).

Every converter checks its row and raises BadRow with what is wrong; `convert_rows` adds where it is
(file or dataset, and the 1-based line or row number) and raises MalformedRow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

FORMATS = ("alpaca", "sharegpt", "chat", "completions", "text", "preference")
CHAT_FORMATS = ("alpaca", "sharegpt", "chat")  # rows that become chat messages

CHAT_ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "model": "assistant",
    "system": "system",
    "tool": "tool", "function": "tool", "observation": "tool",
}

Messages = list[dict[str, str]]


class BadRow(ValueError):
    """What is wrong with one row, without saying where it is."""


class MalformedRow(ValueError):
    """A row that cannot be used: names its source, its line or row number and the problem."""

    def __init__(self, source: str, location: str, problem: str):
        super().__init__(f"{source} {location}: {problem}")
        self.source = source
        self.location = location
        self.problem = problem


# Checks ---------------------------------------------------------------------------------------------


def _mapping(row: Any) -> Mapping:
    if not isinstance(row, Mapping):
        raise BadRow(f"expected an object with named fields, got {_kind(row)}")
    return row


def _text(row: Mapping, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
    if key not in row or row[key] is None:
        if required:
            raise BadRow(f"missing key {key!r} (the row has {_keys(row)})")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise BadRow(f"{key!r} must be a string, got {_kind(value)}")
    if not allow_empty and not value.strip():
        raise BadRow(f"{key!r} is empty")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _keys(row: Mapping) -> str:
    return ", ".join(repr(k) for k in row) or "no keys"


def _check_conversation(messages: Messages, what: str) -> Messages:
    if not messages:
        raise BadRow(f"empty {what}")
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRow(f"the {what} has no assistant message to learn from")
    if messages[-1]["role"] != "assistant":
        raise BadRow(f"the {what} must end with an assistant message, not {messages[-1]['role']!r}")
    return messages


# Converters: one row in, mlx-lm's input out ---------------------------------------------------------


def alpaca_to_messages(row: Mapping) -> Messages:
    """{"instruction", "input"?, "output", "system"?} → system?, user "instruction\\n\\ninput", assistant."""
    row = _mapping(row)
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False, allow_empty=True)
    output = _text(row, "output")
    system = _text(row, "system", required=False, allow_empty=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _turns(row: Mapping, key: str, what: str) -> Sequence:
    """The list of a conversation's turns under `key`, or BadRow saying why it is not one."""
    row = _mapping(row)
    turns = row.get(key)
    if turns is None:
        raise BadRow(f"missing key {key!r} (the row has {_keys(row)})")
    if not isinstance(turns, Sequence) or isinstance(turns, str):
        raise BadRow(f"{key!r} must be a list of {what}, got {_kind(turns)}")
    return turns


def sharegpt_to_messages(row: Mapping, key: str = "conversations") -> Messages:
    """{"conversations": [{"from": human|gpt|system, "value"}, ...]} → chat messages.

    human/user → user, gpt/assistant (also chatgpt, model) → assistant, system → system; turns written
    as {"role", "content"} are read too.
    """
    turns = _turns(row, key, "turns")
    messages: Messages = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, Mapping):
            raise BadRow(f"turn {i} of {key!r} must be an object, got {_kind(turn)}")
        sharegpt_keys = "from" in turn or "value" in turn
        speaker_key, value_key = ("from", "value") if sharegpt_keys else ("role", "content")
        speaker = turn.get(speaker_key)
        if not isinstance(speaker, str):
            raise BadRow(f"turn {i} of {key!r} needs a string {speaker_key!r}, got {_kind(speaker)}")
        role = SHAREGPT_ROLES.get(speaker.strip().lower())
        if role is None:
            known = ", ".join(sorted(SHAREGPT_ROLES))
            raise BadRow(f"turn {i} of {key!r} has unknown role {speaker!r} (known: {known})")
        value = turn.get(value_key)
        if not isinstance(value, str):
            raise BadRow(f"turn {i} of {key!r} needs a string {value_key!r}, got {_kind(value)}")
        messages.append({"role": role, "content": value})
    return _check_conversation(messages, f"conversation in {key!r}")


def chat_messages(row: Mapping, key: str = "messages") -> Messages:
    """{"messages": [{"role", "content"}, ...]} as is, checked: known roles, string contents."""
    turns = _turns(row, key, "messages")
    messages: Messages = []
    for i, message in enumerate(turns, 1):
        role, content = role_and_content(message, i)
        messages.append({**message, "role": role, "content": content})
    return _check_conversation(messages, f"conversation in {key!r}")


def role_and_content(message, i: int, where: str = "") -> tuple[str, str]:
    """Message `i` (`where`: of which list) of a chat, checked: an object with a known role and a
    string content."""
    if not isinstance(message, Mapping):
        raise BadRow(f"message {i}{where} must be an object, got {_kind(message)}")
    role, content = message.get("role"), message.get("content")
    if role not in CHAT_ROLES:
        raise BadRow(f"message {i}{where} has unknown role {role!r} (known: {', '.join(CHAT_ROLES)})")
    if not isinstance(content, str):
        raise BadRow(f"message {i}{where} needs a string 'content', got {_kind(content)}")
    return role, content


def completions_row(row: Mapping) -> dict[str, str]:
    """{"prompt", "completion"}, checked."""
    row = _mapping(row)
    return {"prompt": _text(row, "prompt"), "completion": _text(row, "completion")}


def text_row(row: Mapping) -> dict[str, str]:
    """{"text"}, checked."""
    return {"text": _text(_mapping(row), "text")}


def to_messages(row: Mapping, fmt: str) -> Messages | None:
    """The chat messages a row stands for; None for text rows, which have no turns."""
    if fmt == "alpaca":
        return alpaca_to_messages(row)
    if fmt == "sharegpt":
        return sharegpt_to_messages(row)
    if fmt == "chat":
        return chat_messages(row)
    if fmt == "completions":
        done = completions_row(row)
        return [
            {"role": "user", "content": done["prompt"]},
            {"role": "assistant", "content": done["completion"]},
        ]
    if fmt == "text":
        text_row(row)
        return None
    if fmt == "preference":
        from workbench.data.preference import conversation, preference_row

        return conversation(preference_row(row))
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def convert_row(row: Mapping, fmt: str) -> dict[str, Any]:
    """One row as mlx-lm's dataset classes take it: {"messages"}, {"prompt", "completion"} or {"text"}."""
    if fmt in CHAT_FORMATS:
        converted: dict[str, Any] = {"messages": to_messages(row, fmt)}
        if fmt == "chat" and isinstance(row.get("tools"), list):
            converted["tools"] = row["tools"]  # the chat template renders them, as mlx-lm does
        return converted
    if fmt == "completions":
        return completions_row(row)
    if fmt == "text":
        return text_row(row)
    if fmt == "preference":
        from workbench.data.preference import preference_row

        return preference_row(row)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def detect_format(row: Any) -> str:
    """The format of a data set, from the keys of its first row; raises BadRow when none fits."""
    row = _mapping(row)
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "completions"
    if "text" in row:
        return "text"
    raise BadRow(
        f"cannot tell the format from the keys {_keys(row)}: expected 'messages' (chat), 'conversations' "
        "(sharegpt), 'instruction' and 'output' (alpaca), 'prompt' and 'completion' (completions), 'text', "
        "or 'chosen' and 'rejected' (preference)"
    )


def locate(index: int, lines: Sequence[int] | None = None) -> str:
    """'line N' for a row read from a JSON-lines file, else 'row N' (1-based)."""
    return f"line {lines[index]}" if lines is not None else f"row {index + 1}"


def convert_rows(
    rows: Sequence[Mapping],
    fmt: str,
    source: str,
    lines: Sequence[int] | None = None,
    convert: Callable[[Mapping, str], Any] = convert_row,
) -> list:
    """Convert every row; the first malformed one raises MalformedRow naming source and line/row."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(convert(row, fmt))
        except BadRow as exc:
            raise MalformedRow(source, locate(i, lines), f"{exc} ({fmt} format)") from None
    return out
