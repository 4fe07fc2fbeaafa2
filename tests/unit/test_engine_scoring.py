"""The engine's log-probabilities: prompt scoring (echo), generated tokens' scores, seeds."""

import math

import mlx.core as mx
import pytest

from workbench.providers.streams import GenerationRequest


def reference_logprobs(model, tokens: list[int]) -> list[float]:
    """log p(token i | tokens before it) from a plain forward pass of the model, one prompt alone."""
    logits = model(mx.array(tokens)[None])[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return [logprobs[i - 1, tokens[i]].item() for i in range(1, len(tokens))]


def test_echo_scores_the_prompt_like_a_forward_pass_of_its_own(engine, tiny):
    prompts = ["The sky is blue and the grass is green.", "One", "Count: 1, 2, 3, 4, 5, 6, 7"]
    tokens = [engine.tokenizer.encode(p) for p in prompts]
    # Submitted together: scored in one padded pass, which must not change any prompt's scores.
    streams = engine.submit_all([GenerationRequest(t, max_tokens=0, echo=True, logprobs=3) for t in tokens])
    for t, stream in zip(tokens, streams):
        done = stream.wait()
        assert done.completion_tokens == 0 and done.text == ""
        scores = done.prompt_logprobs
        assert [s.token for s in scores] == t
        assert scores[0].logprob is None
        expected = reference_logprobs(tiny[0], t)
        assert [s.logprob for s in scores[1:]] == pytest.approx(expected, abs=1e-4)
        for s in scores[1:]:
            assert len(s.top) == 3
            values = [v for _, v in s.top]
            assert values == sorted(values, reverse=True)
            assert s.logprob <= values[0] + 1e-6


def test_generated_tokens_carry_their_scores(engine):
    done = engine.generate(GenerationRequest(engine.tokenizer.encode("Once upon a time"), max_tokens=8,
                                             min_tokens=8, logprobs=2))
    assert len(done.logprobs) == done.completion_tokens == 8
    assert engine.tokenizer.decode([s.token for s in done.logprobs]) == done.text
    for s in done.logprobs:  # greedy: each token is the most likely one
        assert s.top[0][0] == s.token and s.logprob == pytest.approx(s.top[0][1])
        assert math.isfinite(s.logprob) and s.logprob <= 0


def test_echo_and_generation_together(engine):
    tokens = engine.tokenizer.encode("Paris is the capital of")
    done = engine.generate(GenerationRequest(tokens, max_tokens=3, min_tokens=3, echo=True, logprobs=1))
    plain = engine.generate(GenerationRequest(tokens, max_tokens=3, min_tokens=3))
    assert done.text == plain.text
    assert len(done.prompt_logprobs) == len(tokens) and len(done.logprobs) == 3


def test_a_seed_gives_the_same_text_and_another_seed_another(engine):
    tokens = engine.tokenizer.encode("Tell me a story about")

    def sample(seed):
        return engine.generate(GenerationRequest(tokens, max_tokens=24, min_tokens=24, temperature=1.5,
                                                 seed=seed)).text

    first = sample(7)
    assert sample(7) == first
    # Beside other requests in the batch, the seeded one still draws the same tokens.
    noise = engine.submit_all([GenerationRequest(tokens, max_tokens=24, temperature=1.5) for _ in range(3)])
    assert sample(7) == first
    for s in noise:
        s.wait()
    assert {sample(seed) for seed in (8, 9, 10)} != {first}
