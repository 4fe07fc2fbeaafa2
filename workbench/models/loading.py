"""Load what the resolver found: a model, or an adapter over the base it was trained on."""

from __future__ import annotations

import mlx_lm

from workbench.models.resolver import ResolvedModel


def load_resolved(resolved: ResolvedModel):
    """mlx_lm.load's (model, tokenizer, config), with the resolved adapter applied as its own
    adapter_config.json describes it; `config` is the base's config.json."""
    if resolved.adapter is None:
        return mlx_lm.load(resolved.path, return_config=True)
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.tuner.utils import load_adapters

    model, tokenizer, config = mlx_lm.load(resolved.path, return_config=True)
    quantization = resolved.adapter.quantization
    if quantization and "quantization" not in config:
        # Trained over a base quantized at training time (QLoRA over a full-precision folder): the
        # adapter fits that quantization, so it is applied again before the adapter goes on.
        nn.quantize(model, **{k: v for k, v in quantization.items() if k in ("bits", "group_size", "mode")})
    load_adapters(model, resolved.adapter.path)
    model.eval()
    # Materialise now: MLX streams belong to a thread, and the engine thread cannot evaluate arrays
    # still pending on this one's.
    mx.eval(model.parameters())
    return model, tokenizer, config
