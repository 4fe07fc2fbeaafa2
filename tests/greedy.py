"""What mlx-lm's own generation answers, as the reference the workbench's answers are checked against."""

from __future__ import annotations

from mlx_lm.generate import stream_generate

# Prompts on which the tiny model, greedy, emits a special token after some text (found by trying
# the lines it was trained on): `<|im_start|>` where its turn should have ended.
PLAIN_PROMPT = "Good morning. Good afternoon. Good eveni"
CHAT_QUESTION = "Forests clean the air, hold the soil in place and give shelter to animals."
# ... and one on which it opens a new turn at once, instead of answering.
CHAT_AT_ONCE = "Add the two numbers."


def chat_tokens(tiny, question: str) -> list[int]:
    _, tokenizer = tiny
    return list(tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                              add_generation_prompt=True))


def greedy_until_special(tiny, prompt_tokens: list[int], max_tokens: int = 30) -> tuple[str, str | None]:
    """mlx-lm's greedy answer up to its first special token, and that token (None if none came)."""
    model, tokenizer = tiny
    special = set(tokenizer.all_special_ids)
    answer: list[int] = []
    for step in stream_generate(model, tokenizer, prompt_tokens, max_tokens=max_tokens):
        if step.token in special:
            return tokenizer.decode(answer), tokenizer.decode([step.token])
        answer.append(step.token)
    return tokenizer.decode(answer), None
