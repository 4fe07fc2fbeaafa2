"""Data: shipped samples, user files under the allowed roots, row formats, splits and previews."""

from __future__ import annotations

import json
import time

import pytest

import workbench  # noqa: F401  (before mlx)
from workbench.data import (
    BadRow,
    DataSpec,
    Examples,
    allowed_roots,
    alpaca_to_messages,
    build,
    chat_messages,
    detect_format,
    load_rows,
    prepare,
    preview,
    sharegpt_to_messages,
    token_lengths,
    validate,
)
from workbench.errors import InputError
from workbench.settings import Settings
from workbench.training.config import TrainingConfig


def user_file(settings: Settings, name: str, rows: list) -> str:
    """Write rows as JSON lines under <home>/datasets; returns the name to give as dataset_path."""
    path = settings.home_dir / "datasets" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return name


ALPACA = [{"instruction": f"Add {i} and {i}.", "input": "", "output": f"{i} plus {i} is {2 * i}."} for i in range(20)]


# Shipped samples ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [("alpaca", "alpaca"), ("sharegpt", "sharegpt"), ("custom", "chat"),
                                       ("zorbish", "chat")])
def test_each_shipped_sample_gives_token_items_with_the_prompt_masked(settings, tiny, name, fmt):
    from mlx_lm.tuner.trainer import iterate_batches

    _, tokenizer = tiny
    masked = build(DataSpec(dataset=name, mask_prompt=True), tokenizer, settings)
    plain = build(DataSpec(dataset=name, mask_prompt=False), tokenizer, settings)

    assert masked.summary.format == fmt and masked.summary.rows >= 200
    assert masked.summary.train_rows + masked.summary.valid_rows == masked.summary.rows
    assert len(masked.train) == masked.summary.train_rows and len(masked.valid) == masked.summary.valid_rows
    for i in range(0, len(masked.train), 25):
        tokens, offset = masked.train[i]
        assert all(isinstance(t, int) for t in tokens)
        assert 0 < offset < len(tokens)
        assert plain.train[i] == (tokens, 0)

    batch, lengths = next(iterate_batches(masked.train, 4, 512))  # what mlx-lm's trainer does with them
    assert batch.shape[0] == 4 and lengths.shape == (4, 2)


def test_the_zorbish_sample_leaves_out_every_pair_its_tasks_ask():
    from importlib.resources import files

    from workbench.evaluation.shipped import heldout_questions

    rows = [json.loads(line) for line in
            (files("workbench.data") / "samples" / "zorbish.jsonl").read_text().splitlines()]
    trained = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in rows}
    asked = {q for q in heldout_questions() if "Zorbish" in q}
    assert len(trained) == 96 and len(asked) == 48 and not trained.keys() & asked
    # every word of a held-out pair is trained, in other pairs, with the same translation
    words = {}
    for question, answer in trained.items():
        for english, zorbish in zip(question.split(": ")[1].split(), answer.split()):
            assert words.setdefault(english, zorbish) == zorbish
    assert all(set(q.split(": ")[1].split()) <= words.keys() for q in asked)


def test_training_config_fields_make_the_spec():
    config = TrainingConfig(experiment_name="x", training_type="lora", dataset="sharegpt",
                            max_seq_length=64, mask_prompt=False, validation_split=0.2, seed=7)
    assert DataSpec.from_config(config) == DataSpec(dataset="sharegpt", dataset_path=None, dataset_format="auto",
                                                    max_seq_length=64, mask_prompt=False,
                                                    validation_split=0.2, seed=7)


# Row formats -------------------------------------------------------------------------------------------


def test_an_alpaca_row_becomes_a_user_and_an_assistant_message():
    assert alpaca_to_messages({"instruction": "Reverse the word.", "input": "river", "output": "revir"}) == [
        {"role": "user", "content": "Reverse the word.\n\nriver"},
        {"role": "assistant", "content": "revir"},
    ]
    assert alpaca_to_messages({"instruction": "Say hi.", "input": "", "output": "hi"})[0]["content"] == "Say hi."
    assert alpaca_to_messages({"instruction": "Say hi.", "output": "hi", "system": "Be brief."})[0] == {
        "role": "system", "content": "Be brief."}


def test_sharegpt_roles_are_mapped_to_chat_roles():
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                             {"from": "gpt", "value": "4"}, {"from": "user", "value": "3+3?"},
                             {"from": "assistant", "value": "6"}]}
    assert [m["role"] for m in sharegpt_to_messages(row)] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in sharegpt_to_messages(row)] == ["Be brief.", "2+2?", "4", "3+3?", "6"]


@pytest.mark.parametrize("convert, row, problem", [
    (alpaca_to_messages, {"instruction": "Say hi."}, "missing key 'output'"),
    (alpaca_to_messages, {"instruction": "Say hi.", "output": 42}, "'output' must be a string"),
    (sharegpt_to_messages, {"conversations": []}, "empty conversation"),
    (sharegpt_to_messages, {"conversations": [{"from": "robot", "value": "beep"}]}, "unknown role 'robot'"),
    (sharegpt_to_messages, {"conversations": [{"from": "human", "value": "hi"}]}, "no assistant message"),
    (chat_messages, {"messages": [{"role": "user", "content": ["hi"]}]}, "string 'content'"),
    (chat_messages, {"messages": [{"role": "wizard", "content": "hi"}]}, "unknown role 'wizard'"),
    (chat_messages, {"messages": "hi"}, "must be a list"),
])
def test_malformed_rows_say_what_is_wrong(convert, row, problem):
    with pytest.raises(BadRow, match=problem):
        convert(row)


def test_the_format_is_detected_from_the_first_row():
    assert detect_format({"instruction": "a", "input": "", "output": "b"}) == "alpaca"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"messages": []}) == "chat"
    assert detect_format({"prompt": "a", "completion": "b"}) == "completions"
    assert detect_format({"text": "a"}) == "text"
    with pytest.raises(BadRow, match="cannot tell the format"):
        detect_format({"question": "a", "answer": "b"})


# User files and where they may lie ---------------------------------------------------------------------


def test_a_malformed_row_in_a_user_file_names_the_file_and_line(settings):
    name = user_file(settings, "broken.jsonl", [ALPACA[0], "", ALPACA[1], {"instruction": "Say bye."}])
    with pytest.raises(InputError) as error:
        validate(DataSpec(dataset="alpaca", dataset_path=name), settings)
    assert error.value.field == "dataset_path"
    assert "broken.jsonl line 4" in error.value.message and "missing key 'output'" in error.value.message

    name = user_file(settings, "not-json.jsonl", [ALPACA[0], '{"instruction": "Say hi", "output": }'])
    with pytest.raises(InputError, match=r"not-json\.jsonl line 2: invalid JSON"):
        validate(DataSpec(dataset="custom", dataset_path=name), settings)


@pytest.mark.parametrize("path", ["/etc/passwd", "../../x.jsonl", "../datasets/../runs/x.jsonl"])
def test_a_path_outside_the_allowed_roots_is_refused(settings, path):
    with pytest.raises(InputError, match="must lie under") as error:
        validate(DataSpec(dataset="alpaca", dataset_path=path), settings)
    assert error.value.field == "dataset_path"


def test_a_link_out_of_the_roots_is_refused_and_extra_roots_are_allowed(settings, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA))
    (settings.home_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (settings.home_dir / "datasets" / "link.jsonl").symlink_to(outside / "rows.jsonl")
    with pytest.raises(InputError, match="must lie under"):
        validate(DataSpec(dataset="alpaca", dataset_path="link.jsonl"), settings)

    wider = Settings(home=settings.home, models_path=settings.models_path, dataset_roots=[outside])
    assert outside.resolve() in allowed_roots(wider)
    assert validate(DataSpec(dataset="alpaca", dataset_path=str(outside / "rows.jsonl")), wider).rows == 20


def test_a_missing_file_names_dataset_path(settings):
    with pytest.raises(InputError, match="no such file") as error:
        validate(DataSpec(dataset="alpaca", dataset_path="nowhere.jsonl"), settings)
    assert error.value.field == "dataset_path"


def test_a_home_folder_of_no_such_user_is_refused_by_name(settings):
    # pathlib raises a bare RuntimeError for "~someone" when no such user exists (found by the fuzzer).
    for spec, field in ((DataSpec(dataset="~no-such-user-zq/rows.jsonl"), "dataset"),
                        (DataSpec(dataset="custom", dataset_path="~no-such-user-zq/rows.jsonl"), "dataset_path")):
        with pytest.raises(InputError, match="no such user") as error:
            validate(spec, settings)
        assert error.value.field == field


def test_csv_parquet_and_json_files_with_alpaca_columns_load_through_datasets(settings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = settings.home_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"What is {i} times 2?", "input": "", "output": str(2 * i)} for i in range(12)]
    with open(folder / "rows.csv", "w") as handle:
        handle.write("instruction,input,output\n" + "".join(f"{r['instruction']},,{r['output']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), folder / "rows.parquet")
    (folder / "rows.json").write_text(json.dumps(rows))

    for name in ("rows.csv", "rows.parquet", "rows.json"):
        loaded = load_rows(DataSpec(dataset="mine", dataset_path=name), settings)
        assert loaded.format == "alpaca" and len(loaded.rows) == 12, name
        assert validate(DataSpec(dataset="mine", dataset_path=name, validation_split=0.25), settings).valid_rows == 3
    assert load_rows(DataSpec(dataset="x", dataset_path="rows.csv"), settings).rows[5]["output"] == "10"  # text


def test_a_folder_in_mlx_lm_layout_keeps_its_own_validation_rows(settings):
    user_file(settings, "qa/train.jsonl", ALPACA[:15])
    user_file(settings, "qa/valid.jsonl", ALPACA[15:])
    summary = validate(DataSpec(dataset="qa"), settings)  # a folder under <home>/datasets, by name
    assert (summary.format, summary.train_rows, summary.valid_rows) == ("alpaca", 15, 5)


def test_a_folder_s_own_test_jsonl_is_its_test_set(settings):
    user_file(settings, "qa3/train.jsonl", ALPACA[:12])
    user_file(settings, "qa3/valid.jsonl", ALPACA[12:16])
    user_file(settings, "qa3/test.jsonl", ALPACA[16:])
    examples = prepare(DataSpec(dataset="qa3", test_split=0.25), settings)
    assert (examples.summary.train_rows, examples.summary.valid_rows, examples.summary.test_rows) == (12, 4, 4)
    assert {row["messages"][0]["content"] for row in examples.test} == {row["instruction"] for row in ALPACA[16:]}
    user_file(settings, "qa3/test.jsonl", [{"instruction": "no output"}])
    with pytest.raises(InputError, match=r"test\.jsonl line 1: missing key 'output'"):
        prepare(DataSpec(dataset="qa3"), settings)


def test_dataset_names_the_format_of_a_user_file(settings):
    name = user_file(settings, "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hello"}]}] * 3)
    assert validate(DataSpec(dataset="custom", dataset_path=name), settings).format == "chat"
    with pytest.raises(InputError, match=r"chat\.jsonl line 1: missing key 'instruction'"):
        validate(DataSpec(dataset="alpaca", dataset_path=name), settings)


def test_completions_mask_the_prompt_and_text_trains_on_everything(settings, tiny):
    _, tokenizer = tiny
    user_file(settings, "pc.jsonl", [{"prompt": f"Double {i}.", "completion": f"{2 * i}"} for i in range(5)])
    user_file(settings, "text.jsonl", [{"text": f"Line number {i} of a plain document."} for i in range(5)])

    completions = build(DataSpec(dataset="x", dataset_path="pc.jsonl", validation_split=0), tokenizer, settings)
    assert completions.valid is None and all(offset > 0 for _, offset in completions.train)
    text = build(DataSpec(dataset="x", dataset_path="text.jsonl", mask_prompt=True), tokenizer, settings)
    assert text.summary.format == "text" and not text.summary.mask_prompt
    assert all(offset == 0 for _, offset in text.train)


# Hugging Face ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_downloads", [True, False])
def test_an_unknown_dataset_id_fails_fast_naming_dataset(settings, monkeypatch, hub_downloads):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    online = Settings(home=settings.home, models_path=settings.models_path, hub_downloads=hub_downloads)
    started = time.monotonic()
    with pytest.raises(InputError) as error:
        validate(DataSpec(dataset="nobody-wb-test/no-such-dataset"), online)
    assert time.monotonic() - started < 10
    assert error.value.field == "dataset" and "no-such-dataset" in error.value.message


def test_a_name_that_is_neither_sample_path_nor_id_is_refused(settings):
    with pytest.raises(InputError, match="not a shipped sample") as error:
        validate(DataSpec(dataset="not a dataset!"), settings)
    assert error.value.field == "dataset"


# What a job keeps ------------------------------------------------------------------------------------


def test_the_rows_a_job_keeps_in_its_run_folder_come_back_as_they_were(settings, tmp_path):
    user_file(settings, "tools.jsonl", [{"messages": [{"role": "user", "content": "Ünïcode?"},
                                                      {"role": "assistant", "content": "ja"}],
                                         "tools": [{"name": "t", "parameters": {"n": 1}}]}] * 5)
    for spec in (DataSpec(dataset="sharegpt", validation_split=0.2), DataSpec(dataset="x", dataset_path="tools.jsonl")):
        examples = prepare(spec, settings)
        assert examples.save(tmp_path / spec.dataset) == tmp_path / spec.dataset / "data"
        assert Examples.load(tmp_path / spec.dataset) == examples
    assert Examples.load(tmp_path / "a job from before") is None


# Split and preview ------------------------------------------------------------------------------------


def test_the_train_valid_split_is_deterministic_for_a_seed_and_disjoint(settings, tiny):
    _, tokenizer = tiny

    def split(seed, share=0.2):
        data = build(DataSpec(dataset="custom", seed=seed, validation_split=share), tokenizer, settings)
        return [json.dumps(e) for e in data.train_examples], [json.dumps(e) for e in data.valid_examples]

    train, valid = split(seed=3)
    assert (train, valid) == split(seed=3)
    assert valid != split(seed=4)[1]
    assert not set(train) & set(valid) and len(set(train) | set(valid)) == 300 and len(valid) == 60

    everything, none = split(seed=3, share=0.0)
    assert sorted(everything) == sorted(train + valid) and none == []
    assert build(DataSpec(dataset="custom", validation_split=0.0), tokenizer, settings).valid is None
    user_file(settings, "one.jsonl", ALPACA[:1])
    one = build(DataSpec(dataset="alpaca", dataset_path="one.jsonl", validation_split=0.5), tokenizer, settings)
    assert len(one.train) == 1 and one.valid is None


def test_a_test_split_holds_rows_out_of_training_and_leaves_the_validation_rows_as_they_were(settings):
    without = prepare(DataSpec(dataset="custom", seed=3, validation_split=0.2), settings)
    held = prepare(DataSpec(dataset="custom", seed=3, validation_split=0.2, test_split=0.1), settings)

    def rows(part):
        return {json.dumps(e) for e in part}

    assert held.valid == without.valid and len(held.test) == held.summary.test_rows == 30
    assert rows(held.train) | rows(held.test) == rows(without.train) and not rows(held.train) & rows(held.test)
    assert held.summary.rows == 300
    held.save(settings.home_dir / "job")
    assert Examples.load(settings.home_dir / "job").test == held.test  # kept with the job, for its worker


def test_preview_shows_the_chat_template_and_counts_masked_tokens(settings, tiny):
    _, tokenizer = tiny
    shown = preview(DataSpec(dataset="alpaca"), tokenizer, settings, n=3)
    assert len(shown) == 3
    first = shown[0]
    assert first["messages"][-1]["role"] == "assistant"
    assert first["text"].startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in first["text"]
    assert first["trained_text"].startswith(first["messages"][-1]["content"])
    assert 0 < first["masked_tokens"] < first["tokens"] and not first["truncated"]

    plain = preview(DataSpec(dataset="alpaca", mask_prompt=False), tokenizer, settings, n=1)[0]
    assert plain["masked_tokens"] == 0 and plain["trained_text"] == plain["text"]
    short = preview(DataSpec(dataset="alpaca", max_seq_length=16), tokenizer, settings, n=1)[0]
    assert short["truncated"] and short["tokens"] == first["tokens"]

    lengths = token_lengths(DataSpec(dataset="alpaca"), tokenizer, settings)
    assert len(lengths) == 300 and lengths[0] == first["tokens"]
