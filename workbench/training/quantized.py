"""Quantized layers whose products run through BLAS on the CPU, for QLoRA.

MLX's quantized matmul does about 3 GFLOP/s on the CPU, against hundreds for an fp32 BLAS product,
so a QLoRA step over a quantized base crawled (0.03x of fp32 LoRA). Here the base stays quantized in
memory, and each product dequantizes its layer's weight just in time and multiplies in fp32. The
backward pass dequantizes again instead of keeping the fp32 weight alive from the forward pass, and a
large matrix (a tied output head over a big vocabulary) is dequantized a block of rows at a time, so
only a few blocks exist in fp32 at once and memory stays near the quantized model's.

The layers are subclasses of mlx's own quantized layers with the same parameters, so checkpoints,
adapters and mlx-lm's `fuse` see exactly what they would see without the swap.
"""

from __future__ import annotations

from functools import cache

import mlx.core as mx
import mlx.nn as nn

# Widths whose packed bytes are unpacked here with plain array ops: 2 to 6 times faster than
# `mx.dequantize` on the CPU (8-bit 3.1M weights: 3.3 ms against 20 ms, 4-bit: 7 ms against 12 ms).
_FAST_BITS = (4, 8)


def dequantize(wq: mx.array, scales: mx.array, biases: mx.array, group_size: int, bits: int) -> mx.array:
    """The fp weight of an affine-quantized matrix (same result as `mx.dequantize`)."""
    if bits not in _FAST_BITS:
        return mx.dequantize(wq, scales, biases, group_size=group_size, bits=bits)
    rows = wq.shape[0]
    packed = mx.view(wq, mx.uint8)  # little-endian: the first value of a word sits in its low bits
    if bits == 4:
        packed = mx.stack([packed & 0xF, packed >> 4], axis=-1)
    values = packed.reshape(rows, -1, group_size).astype(scales.dtype)
    return (values * scales[..., None] + biases[..., None]).reshape(rows, -1)


# Rows of a weight dequantized at once are capped at this many elements (16 MB in fp32). Qwen3-0.6B's
# tied head (151,936 x 1,024) dequantized whole took 0.6 GB per copy, and its transients lifted QLoRA's
# peak memory above fp32 LoRA's; the projections (3M to 13M elements) stay one block.
_BLOCK_ELEMENTS = 1 << 22


def _row_blocks(rows: int, columns: int) -> list[tuple[int, int]]:
    step = max(1, min(rows, _BLOCK_ELEMENTS // max(columns, 1)))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


@cache
def _product(group_size: int, bits: int):
    """x @ W.T for a quantized W, block of rows by block, with a backward pass that dequantizes W
    again (nothing kept)."""

    def weight(wq, scales, biases, rows: tuple[int, int], after: mx.array, dtype) -> mx.array:
        """One block's fp weight, dequantized only once `after` (the last result) exists.

        The dependency is what makes it just in time: a dequantization depends on nothing computed,
        so MLX may otherwise run them all before the first product (every block alive at once), and
        mx.compile would merge the backward pass's dequantization with the forward's (every layer's
        fp32 weight kept until the backward pass: QLoRA's peak memory was above fp32 LoRA's)."""
        start, stop = rows
        q, s, b = mx.depends([wq[start:stop], scales[start:stop], biases[start:stop]], [after])
        return dequantize(q, s, b, group_size, bits).astype(dtype)

    @mx.custom_function
    def product(x, wq, scales, biases):
        parts = [x]
        for rows in _row_blocks(wq.shape[0], x.shape[-1]):
            parts.append(x @ weight(wq, scales, biases, rows, parts[-1], x.dtype).T)
        return parts[1] if len(parts) == 2 else mx.concatenate(parts[1:], axis=-1)

    @product.vjp
    def product_vjp(primals, cotangent, output):
        x, wq, scales, biases = primals
        dx = None
        for start, stop in _row_blocks(wq.shape[0], x.shape[-1]):
            w = weight(wq, scales, biases, (start, stop), cotangent if dx is None else dx, cotangent.dtype)
            part = cotangent[..., start:stop] @ w
            dx = part if dx is None else dx + part
        # The base is frozen: its cotangents are never evaluated, only their shapes are needed.
        return dx, mx.zeros_like(wq), mx.zeros_like(scales), mx.zeros_like(biases)

    return product


class DequantizedLinear(nn.QuantizedLinear):
    """A QuantizedLinear whose product dequantizes just in time and runs in the input's dtype."""

    def __call__(self, x):
        y = _product(self.group_size, self.bits)(x, self["weight"], self["scales"], self["biases"])
        if "bias" in self:
            y = y + self["bias"]
        return y


class DequantizedEmbedding(nn.QuantizedEmbedding):
    """A QuantizedEmbedding whose `as_linear` (tied output head) dequantizes just in time."""

    def as_linear(self, x):
        return _product(self.group_size, self.bits)(x, self["weight"], self["scales"], self["biases"])


_SWAPS = {nn.QuantizedLinear: DequantizedLinear, nn.QuantizedEmbedding: DequantizedEmbedding}


def dequantize_products(model: nn.Module) -> int:
    """Make every affine-quantized linear and embedding of `model` dequantize just in time.
    Returns how many layers changed. Call before wrapping the layers in LoRA."""
    changed = 0
    for _, module in model.named_modules():
        swap = _SWAPS.get(type(module))
        if swap is not None and getattr(module, "mode", "affine") == "affine":
            # Same parameters and attributes, different product: switching the class keeps the
            # module where it is in the tree (and its quantized weights untouched).
            module.__class__ = swap
            changed += 1
    return changed
