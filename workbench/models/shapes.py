"""Model shapes the workbench can build: its tiny local chat model and random-weight real shapes."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Qwen3Shape:
    """The fields `mlx_lm.models.qwen3.ModelArgs` needs; it has no defaults, so config.json names all."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = True
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    def config(self, vocab_size: int | None = None) -> dict:
        config = {"model_type": "qwen3", **asdict(self)}
        if vocab_size is not None:
            config["vocab_size"] = vocab_size
        return config


# The tiny model takes its vocabulary size from the tokenizer trained for it (vocab_size is a cap).
TINY = Qwen3Shape(
    hidden_size=128,
    num_hidden_layers=4,
    intermediate_size=384,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=1024,
    max_position_embeddings=2048,
)

# Published Qwen3 configurations (Hugging Face model cards of Qwen/Qwen3-0.6B and Qwen/Qwen3-1.7B).
REAL_SHAPES = {
    "qwen3-0.6b": Qwen3Shape(
        hidden_size=1024,
        num_hidden_layers=28,
        intermediate_size=3072,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
    ),
    "qwen3-1.7b": Qwen3Shape(
        hidden_size=2048,
        num_hidden_layers=28,
        intermediate_size=6144,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
    ),
}
