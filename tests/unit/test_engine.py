import subprocess
import sys

import pytest

from workbench.providers.engine import LocalEngine
from workbench.providers.streams import EngineFull, GenerationRequest


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


@pytest.fixture(scope="module")
def uncached(tiny):
    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer, prompt_cache_size=0)
    yield engine
    engine.close()


def chat(engine, messages, **options):
    tokens = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return engine.generate(GenerationRequest(list(tokens), **{"max_tokens": 30, "min_tokens": 1} | options))


def test_the_next_turn_of_a_chat_reuses_the_cached_history_and_answers_the_same(engine, uncached):
    history = [{"role": "system", "content": "You answer questions about colours. " * 8},
               {"role": "user", "content": "What colour is grass?"}]
    first = chat(engine, history)
    assert first.text == chat(uncached, history).text
    history += [{"role": "assistant", "content": first.text},
                {"role": "user", "content": "What colour is the sky?"}]
    before = engine.stats()["cached_prompt_tokens"]

    second = chat(engine, history)
    plain = chat(uncached, history)

    assert second.cached_tokens >= first.prompt_tokens  # the whole first turn came from the cache
    assert engine.stats()["cached_prompt_tokens"] - before == second.cached_tokens
    assert plain.cached_tokens == 0
    assert second.text == plain.text
    assert second.prompt_tokens == plain.prompt_tokens


def test_continuing_a_completion_from_where_it_ended_processes_one_token(engine, uncached):
    prompt = "Once upon a time"
    first = engine.generate(ask(engine, prompt, max_tokens=8, min_tokens=8))
    # The prompt and the answer are exactly what the cache holds: all but the last token is reused.
    follow = ask(engine, prompt + first.text, max_tokens=8, min_tokens=8)

    again = engine.generate(follow)

    assert again.cached_tokens == len(follow.prompt_tokens) - 1
    assert again.text == uncached.generate(follow).text


def test_a_request_cut_by_a_stop_string_leaves_its_history_in_the_cache(engine, uncached):
    prompt = "In the old harbour town the fishing boats"  # asked of `engine` nowhere else
    full = uncached.generate(ask(uncached, prompt, max_tokens=12, min_tokens=12)).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = engine.generate(ask(engine, prompt, max_tokens=12, min_tokens=12, stop=(stop,)))
    assert cut.finish_reason == "stop"

    follow = engine.generate(ask(engine, prompt + cut.text + " Then", max_tokens=5))

    assert follow.cached_tokens >= len(engine.tokenizer.encode(prompt))


def test_stats_count_prompt_tokens_and_those_served_from_the_cache(engine, uncached):
    request = ask(engine, "Water boils at", max_tokens=5)
    engine.generate(request)
    before = engine.stats()

    engine.generate(request)
    after = engine.stats()

    assert after["requests"] == before["requests"] + 1
    assert after["prompt_tokens"] == before["prompt_tokens"] + len(request.prompt_tokens)
    assert after["cached_prompt_tokens"] == before["cached_prompt_tokens"] + len(request.prompt_tokens) - 1
    assert 1 <= after["prompt_cache"]["entries"] <= after["prompt_cache"]["max_entries"] == 10
    assert after["prompt_cache"]["bytes"] > 0
    assert uncached.stats()["prompt_cache"] == {"max_entries": 0, "entries": 0, "bytes": 0}


def test_a_process_that_used_the_engine_exits_cleanly(models_dir):
    # MLX streams and arrays the engine thread made, left to the interpreter's exit, abort the
    # process now and then ("terminate called without an active exception", exit code 134).
    code = (
        "import workbench, mlx_lm\n"
        "from workbench.providers.engine import LocalEngine\n"
        "from workbench.providers.streams import GenerationRequest\n"
        f"model, tokenizer = mlx_lm.load({models_dir + '/tiny'!r})\n"
        "engine = LocalEngine(model, tokenizer)\n"
        "engine.generate(GenerationRequest(tokenizer.encode('Hello'), max_tokens=3))\n"
        "assert engine.stats()['prompt_cache']['entries'] == 1\n"
        "engine.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_full_batch_and_queue_refuse_more_and_free_their_places_as_requests_end(tiny):
    model, tokenizer = tiny
    bounded = LocalEngine(model, tokenizer, max_batch=1, max_waiting=1)
    try:
        long = GenerationRequest(tokenizer.encode("Once upon a time"), max_tokens=200, min_tokens=200)
        running, waiting = bounded.submit(long), bounded.submit(long)
        with pytest.raises(EngineFull):
            bounded.submit(long)
        with pytest.raises(EngineFull):  # a batch is taken whole or not at all
            bounded.submit_all([long])
        assert bounded.stats()["in_flight"] == 2

        running.cancel()
        waiting.cancel()
        running.wait(), waiting.wait()
        assert bounded.taken == 0
        assert bounded.generate(ask(bounded, "Hi", max_tokens=2)).completion_tokens >= 1
    finally:
        bounded.close()
