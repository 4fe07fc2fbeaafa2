"""Log-probabilities for the engine: a prompt's own tokens scored in one forward pass per batch of
prompts, a generated token's score and alternatives, and samplers seeded per request.

Runs on the engine thread only (the thread that owns the model): docs/architecture.md, "Scoring and
log-probabilities".
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_p

from workbench.providers.streams import TokenScore

MAX_TOP_LOGPROBS = 20
# Logits held at once by one scoring pass (batch x length x vocabulary, fp32): 2^26 is 256 MiB. A
# batch of prompts is cut into passes under it; a prompt larger than it alone gets a pass of its own.
SCORING_BUDGET = 1 << 26


def score_prompts(model, prompts: list[list[int]], tops: list[int]) -> list[list[TokenScore]]:
    """Each prompt's tokens scored by the model: the first one's log-probability is None (nothing
    precedes it), token i's is log p(token i | tokens before it), with `tops[j]` alternatives."""
    vocab = _vocabulary(model)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores: list[list[TokenScore] | None] = [None] * len(prompts)
    start = 0
    while start < len(order):
        # Prompts of like length together, as many as the budget holds: little padding, bounded memory.
        end = start + 1
        while end < len(order):
            longest = len(prompts[order[end]])
            if (end - start + 1) * longest * vocab > SCORING_BUDGET:
                break
            end += 1
        chunk = order[start:end]
        rows = _score_batch(model, [prompts[i] for i in chunk], [tops[i] for i in chunk])
        for i, row in zip(chunk, rows):
            scores[i] = row
        start = end
    return scores  # type: ignore[return-value]


def _vocabulary(model) -> int:
    args = getattr(model, "args", None)
    return getattr(args, "vocab_size", None) or 1 << 18  # unknown: assume a large one


def _score_batch(model, prompts: list[list[int]], tops: list[int]) -> list[list[TokenScore]]:
    # Padded on the right: attention is causal, so a pad after a prompt's last token changes none
    # of its positions, and no mask is needed.
    width = max(len(p) for p in prompts)
    tokens = mx.array([p + [0] * (width - len(p)) for p in prompts])
    rows = [[TokenScore(p[0], None)] for p in prompts]
    if width == 1:
        return rows
    logits = model(tokens[:, :-1])
    logprobs = logits.astype(mx.float32)
    logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
    chosen = mx.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)[..., 0]
    k = max(tops)
    top_ids = top_values = None
    if k > 0:
        top_ids = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., :k]
        top_values = mx.take_along_axis(logprobs, top_ids, axis=-1)
        mx.eval(chosen, top_ids, top_values)
        top_ids, top_values = top_ids.tolist(), top_values.tolist()
    chosen = chosen.tolist()
    for b, prompt in enumerate(prompts):
        for i in range(1, len(prompt)):
            top = []
            if tops[b] > 0:
                top = _best(top_ids[b][i - 1], top_values[b][i - 1], tops[b])
            rows[b].append(TokenScore(prompt[i], chosen[b][i - 1], top))
    return rows


def token_score(logprobs: mx.array, token: int, k: int) -> TokenScore:
    """A generated token's score from its step's log-probabilities (one row of the vocabulary)."""
    top = []
    if k > 0:
        ids = mx.argpartition(-logprobs, kth=k - 1)[:k]
        top = _best(ids.tolist(), logprobs[ids].tolist(), k)
    return TokenScore(token, logprobs[token].item(), top)


def _best(ids: list[int], values: list[float], k: int) -> list[tuple[int, float]]:
    return sorted(zip(ids, values), key=lambda pair: -pair[1])[:k]


def seeded_sampler(temperature: float, top_p: float, seed: int):
    """A sampler with its own random key, split at each step: the same seed draws the same tokens
    whatever else shares the batch (the batch's shared sampler draws from MLX's global key)."""
    key = mx.random.key(seed)

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, step = mx.random.split(key)
        if top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        return mx.random.categorical(logprobs * (1 / temperature), key=step)

    return sample
