"""No special token reaches generated text: the engine ends an answer where the model opens
another turn (docs/architecture.md, "Special tokens")."""

from mlx_lm.generate import stream_generate

from tests.greedy import CHAT_AT_ONCE, CHAT_QUESTION, PLAIN_PROMPT, chat_tokens, greedy_until_special
from workbench.providers.engine import LocalEngine
from workbench.providers.streams import GenerationRequest
from workbench.providers.turns import answer_ends


def _greedy(engine, tokens, min_tokens=0):
    return engine.generate(GenerationRequest(prompt_tokens=tokens, max_tokens=30, temperature=0.0,
                                             top_p=1.0, stop=(), min_tokens=min_tokens))


def test_the_turn_opener_ends_an_answer_like_eos(tiny):
    _, tokenizer = tiny
    ends = {tokenizer.convert_ids_to_tokens(t) for t in answer_ends(tokenizer)}
    assert ends == {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}


def test_answers_stop_before_the_special_token_mlx_lm_would_render(tiny):
    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer)
    try:
        for prompt in (tokenizer.encode(PLAIN_PROMPT), chat_tokens(tiny, CHAT_QUESTION),
                       chat_tokens(tiny, CHAT_AT_ONCE)):
            expected, special = greedy_until_special(tiny, prompt)
            assert special == "<|im_start|>"  # what mlx-lm's own generation shows here
            answer = _greedy(engine, prompt)
            assert (answer.text, answer.finish_reason) == (expected, "stop")
            assert "<|" not in _greedy(engine, prompt, min_tokens=5).text
    finally:
        engine.close()


def test_streamed_pieces_hold_no_special_token(tiny):
    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer)
    try:
        prompt = tokenizer.encode(PLAIN_PROMPT)
        stream = engine.submit(GenerationRequest(prompt_tokens=prompt, max_tokens=30, temperature=0.0,
                                                 top_p=1.0, stop=(), min_tokens=0))
        pieces = list(stream)
        assert "".join(pieces) == greedy_until_special(tiny, prompt)[0]
        assert not any("<|" in piece for piece in pieces)
    finally:
        engine.close()


def test_mlx_lm_alone_renders_them(tiny):
    """The reference itself: without the engine's turn ends, the text shows `<|im_start|>`."""
    model, tokenizer = tiny
    text = "".join(step.text for step in stream_generate(model, tokenizer, tokenizer.encode(PLAIN_PROMPT),
                                                          max_tokens=30))
    assert "<|im_start|>" in text


def test_without_a_chat_template_only_eos_bos_and_pad_end_an_answer(tiny):
    _, tokenizer = tiny
    template = tokenizer._tokenizer.chat_template
    tokenizer._tokenizer.chat_template = None
    try:
        ends = answer_ends(tokenizer)
    finally:
        tokenizer._tokenizer.chat_template = template
    assert ends == set(tokenizer.eos_token_ids) | {tokenizer.pad_token_id}
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in ends
