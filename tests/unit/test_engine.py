
import pytest

from workbench.providers.engine import GenerationRequest, LocalEngine


@pytest.fixture(scope="module")
def engine(tiny):
    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer)
    yield engine
    engine.close()


def ask(engine, prompt, **options):
    return GenerationRequest(engine.tokenizer.encode(prompt), **options)


def test_temperature_zero_is_deterministic(engine):
    first = engine.generate(ask(engine, "The sky is", max_tokens=20))
    second = engine.generate(ask(engine, "The sky is", max_tokens=20))
    assert first.text == second.text
    assert first.text.startswith(" ")  # a completion continues its prompt, space included


def test_max_tokens_is_respected(engine):
    done = engine.generate(ask(engine, "Count: 1, 2, 3,", max_tokens=7, min_tokens=7, temperature=1.0))
    assert done.completion_tokens == 7
    assert done.finish_reason == "length"


def test_stop_sequence_cuts_the_text_before_it(engine):
    full = engine.generate(ask(engine, "Paris is the capital of", max_tokens=12, min_tokens=12)).text
    # Stop on a piece from the middle of what the model says anyway, so the cut point is known.
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"need a visible stop string, got {stop!r} from {full!r}"

    cut = engine.generate(ask(engine, "Paris is the capital of", max_tokens=12, min_tokens=12, stop=(stop,)))

    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text


def test_streaming_pieces_add_up_to_the_text(engine):
    stream = engine.submit(ask(engine, "Once upon a time", max_tokens=15))
    pieces = list(stream)
    assert len(pieces) > 1
    assert "".join(pieces) == stream.result.text


def test_concurrent_requests_share_the_batch_each_with_its_own_limits(engine):
    requests = [ask(engine, f"Request {i}: Tell me about AI", max_tokens=4 + i, min_tokens=4 + i)
                for i in range(5)]
    streams = [engine.submit(r) for r in requests]
    results = [s.wait() for s in streams]
    assert [r.completion_tokens for r in results] == [4, 5, 6, 7, 8]


def test_concurrent_greedy_answers_match_sequential_ones(engine):
    prompts = ["The sky is", "Water boils at", "Hello! How are"]
    alone = [engine.generate(ask(engine, p, max_tokens=10)).text for p in prompts]
    together = [s.wait().text for s in [engine.submit(ask(engine, p, max_tokens=10)) for p in prompts]]
    assert together == alone


def test_a_bad_request_fails_alone_and_the_engine_carries_on(engine):
    good = engine.submit(ask(engine, "The sky is", max_tokens=30, min_tokens=30))
    bad = engine.submit(GenerationRequest([], max_tokens=5))
    with pytest.raises(ValueError, match="empty prompt"):
        bad.wait()
    assert good.wait().completion_tokens == 30
    assert engine.generate(ask(engine, "Hello", max_tokens=3, min_tokens=3)).completion_tokens == 3


def test_a_cancelled_request_leaves_the_batch(engine):
    stream = engine.submit(ask(engine, "Once upon a time", max_tokens=2000, min_tokens=2000))
    first = next(iter(stream))
    stream.cancel()
    rest = list(stream)
    assert first and stream.result.finish_reason == "cancelled"
    assert stream.result.completion_tokens < 2000
    assert len(rest) < 2000


def test_min_tokens_rules_out_an_empty_answer(engine):
    for _ in range(5):
        done = engine.generate(ask(engine, "What is the capital of France?", max_tokens=8, min_tokens=1,
                                   temperature=1.0))
        assert done.text != ""
