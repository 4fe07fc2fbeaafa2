"""Merge a trained adapter into its base model and save the result as a model folder, as
`mlx_lm fuse` does, so that `mlx_lm.load` (and the workbench) open it like any model."""

from __future__ import annotations

from pathlib import Path

from mlx.utils import tree_unflatten
from mlx_lm.utils import dequantize_model, save

from workbench.models.loading import load_resolved
from workbench.models.resolver import ResolvedModel


def fuse_adapter(resolved: ResolvedModel, dest: Path) -> Path:
    """`resolved` holds an adapter (an experiment's, or an adapter folder's): its base and how to load
    it come from the adapter's own adapter_config.json."""
    if resolved.adapter is None:
        raise ValueError(f"{resolved.name} resolves to no adapter: nothing to fuse")
    model, tokenizer, config = load_resolved(resolved)
    # A QLoRA base quantized for training (not stored quantized) is saved back in full precision:
    # its config.json has no quantization section to describe the quantized weights.
    dequantize = resolved.adapter.quantization is not None and "quantization" not in config
    fused = [(name, module.fuse(dequantize=dequantize)) for name, module in model.named_modules()
             if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
    save(dest, resolved.path, model, tokenizer, config, donate_model=False)
    return dest
