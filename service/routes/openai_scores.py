"""OpenAI's shapes of token scores, from the workbench's GenerateResponse: the legacy completions'
`{tokens, token_logprobs, top_logprobs, text_offset}` (what lm-eval's local-completions reads) and
chat's `{content: [{token, logprob, bytes, top_logprobs}]}`. See docs/architecture.md, "Scoring and
log-probabilities"."""

from __future__ import annotations

from workbench.schemas import GenerateResponse, TokenLogprob


def legacy_logprobs(response: GenerateResponse, echo: bool) -> dict:
    """One choice's `logprobs`; with echo the prompt's tokens come first (the first one's null)."""
    scores: list[TokenLogprob] = list(response.prompt_logprobs or []) if echo else []
    scores += response.logprobs or []
    offsets, at = [], 0
    for s in scores:  # offsets into the choice's text (the prompt's too with echo)
        offsets.append(at)
        at += len(s.token)
    return {
        "tokens": [s.token for s in scores],
        "token_logprobs": [s.logprob for s in scores],
        "top_logprobs": [None if s.logprob is None else {t.token: t.logprob for t in s.top_logprobs}
                         for s in scores],
        "text_offset": offsets,
    }


def chat_logprobs(response: GenerateResponse) -> dict:
    def entry(s) -> dict:
        return {"token": s.token, "logprob": s.logprob, "bytes": list(s.token.encode())}

    return {"content": [entry(s) | {"top_logprobs": [entry(t) for t in s.top_logprobs]}
                        for s in response.logprobs or []], "refusal": None}
