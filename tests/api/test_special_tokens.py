"""No special token in any generated text, on every path a client can take: `/generate` whole and
streamed, `/generate/batch`, and `/v1` chat and text completions whole and streamed. Each answer is
checked against mlx-lm's own greedy generation, which renders `<|im_start|>` on these prompts."""

import openai
import pytest

from tests.greedy import CHAT_AT_ONCE, CHAT_QUESTION, PLAIN_PROMPT, chat_tokens, greedy_until_special
from workbench.providers.params import BatchGenerateParams, ChatMessage, GenerateParams

GREEDY = {"temperature": 0, "max_tokens": 30}


@pytest.fixture(scope="module")
def expected(tiny):
    """Each prompt's reference answer; the reference itself shows the special token."""
    answers = {}
    for name, tokens in (("plain", tiny[1].encode(PLAIN_PROMPT)), ("chat", chat_tokens(tiny, CHAT_QUESTION)),
                         ("at_once", chat_tokens(tiny, CHAT_AT_ONCE))):
        answers[name], special = greedy_until_special(tiny, tokens)
        assert special == "<|im_start|>", name
    return answers


def _user(question):
    return [{"role": "user", "content": question}]


def test_generate_whole_and_streamed(api, expected):
    with api.client() as client:
        plain = client.generate(GenerateParams(prompt=PLAIN_PROMPT, **GREEDY))
        chat = client.generate(GenerateParams(messages=[ChatMessage(**m) for m in _user(CHAT_QUESTION)],
                                              **GREEDY))
        stream = client.stream(GenerateParams(prompt=PLAIN_PROMPT, **GREEDY))
        pieces = list(stream)
    assert (plain.generated_text, plain.finish_reason) == (expected["plain"], "stop")
    assert (chat.generated_text, chat.finish_reason) == (expected["chat"], "stop")
    assert "".join(pieces) == expected["plain"] == stream.result().generated_text


def test_generate_refills_an_answer_cut_at_once_without_special_tokens(api):
    """min_tokens (1 by default) asks for an answer where the model opened a new turn at once."""
    with api.client() as client:
        answer = client.generate(GenerateParams(messages=[ChatMessage(**m) for m in _user(CHAT_AT_ONCE)],
                                                **GREEDY))
    assert answer.generated_text and "<|" not in answer.generated_text


def test_batch(api, expected):
    with api.client() as client:
        items = client.generate_batch(BatchGenerateParams(prompts=[PLAIN_PROMPT, "The sky is"], **GREEDY))
    assert items[0].generated_text == expected["plain"]
    assert items[1].generated_text.startswith(" blue")


def test_openai_chat_and_text_completions(api, expected):
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    chat = client.chat.completions.create(model="tiny", messages=_user(CHAT_QUESTION), **GREEDY)
    at_once = client.chat.completions.create(model="tiny", messages=_user(CHAT_AT_ONCE), **GREEDY)
    streamed = client.chat.completions.create(model="tiny", messages=_user(CHAT_QUESTION), stream=True, **GREEDY)
    text = client.completions.create(model="tiny", prompt=PLAIN_PROMPT, **GREEDY)
    text_pieces = client.completions.create(model="tiny", prompt=PLAIN_PROMPT, stream=True, **GREEDY)
    assert chat.choices[0].message.content == expected["chat"]
    assert (at_once.choices[0].message.content, at_once.choices[0].finish_reason) == (expected["at_once"], "stop")
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected["chat"]
    assert text.choices[0].text == expected["plain"]
    assert "".join(c.choices[0].text for c in text_pieces) == expected["plain"]
