import json

import mlx_lm
import pytest
from tokenizers import Tokenizer

from workbench.models.builder import BuildSpec, build, builtin_spec
from workbench.models.resolver import ModelNotFound, ModelResolver
from workbench.models.shapes import REAL_SHAPES, TINY


def test_tiny_model_is_a_hugging_face_folder(models_dir):
    folder = f"{models_dir}/tiny"
    config = json.load(open(f"{folder}/config.json"))
    tokenizer_config = json.load(open(f"{folder}/tokenizer_config.json"))

    assert config["model_type"] == "qwen3"
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size",
                "max_position_embeddings", "tie_word_embeddings", "rope_theta"):
        assert key in config
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert "<|im_start|>" in tokenizer_config["chat_template"]


def test_mlx_lm_loads_it_with_the_trained_tokenizer_ids(models_dir, tiny):
    model, tokenizer = tiny
    trained = Tokenizer.from_file(f"{models_dir}/tiny/tokenizer.json")
    text = "The sky is blue, and 12 robots read 3 books."

    assert tokenizer.encode(text) == trained.encode(text).ids
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in tokenizer.eos_token_ids


def test_tiny_model_answers_in_its_chat_format(tiny):
    model, tokenizer = tiny
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What colour is grass?"}], add_generation_prompt=True
    )
    answer = mlx_lm.generate(model, tokenizer, prompt, max_tokens=30)
    # Brief training on the project's own text teaches it this answer and to end the turn.
    assert answer.strip() == "Grass is green."


def test_builder_makes_quantized_models(tmp_path):
    spec = BuildSpec(name="tiny-4bit", shape=TINY, bits=4)
    folder = build(spec, tmp_path / "tiny-4bit")

    config = json.load(open(folder / "config.json"))
    model, tokenizer = mlx_lm.load(str(folder))

    assert config["quantization"]["bits"] == 4
    assert type(model.model.layers[0].mlp.up_proj).__name__ == "QuantizedLinear"
    assert mlx_lm.generate(model, tokenizer, "Hello", max_tokens=3) is not None


def test_registered_names_cover_real_shapes():
    spec = builtin_spec("random/qwen3-1.7b-8bit")
    assert spec.shape == REAL_SHAPES["qwen3-1.7b"] and spec.bits == 8
    assert builtin_spec("random/qwen3-0.6b").bits is None
    assert REAL_SHAPES["qwen3-0.6b"].hidden_size == 1024
    assert builtin_spec("random/qwen9-1b") is None


def test_resolver_order_alias_registered_folder(settings, models_dir, tmp_path):
    settings.model_aliases = {"mlx-community/Qwen3-1.7B-8bit": "tiny", "mine": str(tmp_path)}
    resolver = ModelResolver(settings)

    aliased = resolver.resolve("mlx-community/Qwen3-1.7B-8bit")
    assert aliased.source == "registered" and aliased.path == f"{models_dir}/tiny"
    assert aliased.name == "mlx-community/Qwen3-1.7B-8bit"

    folder = resolver.resolve(f"{models_dir}/tiny")
    assert folder.source == "folder"

    with pytest.raises(ModelNotFound, match="no config.json"):
        resolver.resolve("mine")


def test_resolver_finds_the_hugging_face_cache(settings, models_dir, tmp_path, monkeypatch):
    # The cache layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/}.
    cache = tmp_path / "hf"
    snapshot = cache / "models--someone--cached-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (snapshot / f).symlink_to(f"{models_dir}/tiny/{f}")
    (cache / "models--someone--cached-model" / "refs").mkdir()
    (cache / "models--someone--cached-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))

    resolved = ModelResolver(settings).resolve("someone/cached-model")

    assert resolved.source == "hf-cache"
    assert resolved.path == str(snapshot)
    model, tokenizer = mlx_lm.load(resolved.path)
    assert tokenizer.encode("hello")


def test_unknown_names_fail_fast_with_the_reason(settings):
    resolver = ModelResolver(settings)
    with pytest.raises(ModelNotFound, match="hub downloads are off"):
        resolver.resolve("nonexistent/model")
    with pytest.raises(ModelNotFound, match="not a registered name"):
        resolver.resolve("no such model")
    settings.model_aliases = {"a": "b", "b": "a"}
    with pytest.raises(ModelNotFound, match="alias loop"):
        resolver.resolve("a")


def test_hub_lookup_without_network_is_a_clear_error(settings):
    settings.hub_downloads = True
    with pytest.raises(ModelNotFound, match="hub"):
        ModelResolver(settings).resolve("nonexistent/model")
