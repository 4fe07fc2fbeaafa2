"""Which tokens end a local model's answer, so that no special token reaches generated text.

A chat answer ends where the assistant's turn ends. Models mark that with their eos token, but a
small or undertrained model also opens the next turn without closing its own (`<|im_start|>` where
`<|im_end|>` belongs), or starts a new document (bos, pad). The streaming detokenizer renders such a
token as text, and `<|im_start|>assistant` then showed in answers. Each of these tokens ends the
answer like eos does, and is never rendered (docs/architecture.md, "Special tokens").

Tokens that an answer carries on purpose stay: thinking and tool-call markers (`<think>`,
`<tool_call>`), which the parsers read from the text, and the turn opener of formats whose answers
hold several messages (harmony's `<|start|>` between its `<|channel|>`s).
"""

from __future__ import annotations

_PROBE = [{"role": "user", "content": "x"}]


def answer_ends(tokenizer) -> set[int]:
    """The ids that end an answer: eos, bos, pad, and the special token that opens a chat turn."""
    ends = set(tokenizer.eos_token_ids)
    ends |= {t for t in (tokenizer.bos_token_id, tokenizer.pad_token_id) if t is not None}
    opener = _turn_opener(tokenizer)
    if opener is not None:
        ends.add(opener)
    return ends - _markers(tokenizer)


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return ids


def _turn_opener(tokenizer) -> int | None:
    """The first token of the chat template's generation prompt (`<|im_start|>` of
    `<|im_start|>assistant\\n`), when it is a special token: the token that opens every turn."""
    if "<|channel|>" in tokenizer.get_vocab():
        return None  # harmony: an answer is several messages, each opened anew
    try:
        prompted = list(tokenizer.apply_chat_template(_PROBE, add_generation_prompt=True))
        plain = list(tokenizer.apply_chat_template(_PROBE, add_generation_prompt=False))
    except Exception:  # no chat template, or one that wants more than a user message
        return None
    if len(prompted) <= len(plain) or prompted[: len(plain)] != plain:
        return None
    opener = prompted[len(plain)]
    return opener if opener in _special_ids(tokenizer) else None


def _markers(tokenizer) -> set[int]:
    """Single-token thinking and tool-call markers: text the answer must keep."""
    sequences = [tokenizer.think_start_tokens, tokenizer.think_end_tokens] if tokenizer.has_thinking else []
    if tokenizer.has_tool_calling:
        sequences += [tokenizer.encode(marker, add_special_tokens=False)
                      for marker in (tokenizer.tool_call_start, tokenizer.tool_call_end) if marker]
    return {seq[0] for seq in sequences if seq and len(seq) == 1}
