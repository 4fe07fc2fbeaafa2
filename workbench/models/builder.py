"""Builds models in the Hugging Face layout, so that `mlx_lm.load` opens them like any real model.

Two kinds: the tiny local chat model (a few MB, briefly trained on the project's own text so that it
answers in its chat format and stops at `<|im_end|>`), and random-weight models of real shapes
(Qwen3-0.6B, Qwen3-1.7B, optionally 4 or 8-bit) for benchmarks.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map
from mlx_lm.models import qwen3
from mlx_lm.tuner.trainer import default_loss, iterate_batches
from mlx_lm.utils import quantize_model, save_config, save_model

from workbench.models.shapes import REAL_SHAPES, TINY, Qwen3Shape
from workbench.models.tokenizer import (
    CHAT_TEMPLATE,
    IM_END,
    PAD,
    corpus_lines,
    save_tokenizer,
    train_tokenizer,
)

_RANDOM_NAME = re.compile(r"^random/(?P<shape>[a-z0-9.-]+?)(?:-(?P<bits>4|8)bit)?$")
_QA_LINE = re.compile(r"^(?:Question|Instruction): (?P<ask>.+?) (?:Answer|Response): (?P<say>.+)$")


@dataclass(frozen=True)
class BuildSpec:
    """What to build; `name` is the registered name the resolver knows it by."""

    name: str
    shape: Qwen3Shape
    bits: int | None = None
    pretrain_steps: int = 0
    dtype: str = "float32"
    seed: int = 0


def builtin_spec(name: str) -> BuildSpec | None:
    """The build behind a registered name: `tiny`, or `random/<shape>[-4bit|-8bit]`."""
    if name == "tiny":
        return BuildSpec(name="tiny", shape=TINY, pretrain_steps=300)
    match = _RANDOM_NAME.match(name)
    if match and match["shape"] in REAL_SHAPES:
        bits = int(match["bits"]) if match["bits"] else None
        return BuildSpec(name=name, shape=REAL_SHAPES[match["shape"]], bits=bits, dtype="bfloat16")
    return None


def builtin_names() -> list[str]:
    names = ["tiny"]
    for shape in REAL_SHAPES:
        names += [f"random/{shape}", f"random/{shape}-4bit", f"random/{shape}-8bit"]
    return names


def folder_for(models_dir: Path, name: str) -> Path:
    return models_dir / name.replace("/", "--")


def ensure_built(spec: BuildSpec, models_dir: Path) -> Path:
    """The model's folder, building it first if it is not there yet (once, across processes)."""
    dest = folder_for(models_dir, spec.name)
    if (dest / "config.json").exists():
        return dest
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / f".{dest.name}.lock"):
        if not (dest / "config.json").exists():
            build(spec, dest)
    return dest


def build(spec: BuildSpec, dest: Path) -> Path:
    """Write the model to `dest` atomically: a half-written folder is never visible."""
    tokenizer = train_tokenizer(spec.shape.vocab_size)
    vocab_size = tokenizer.get_vocab_size() if spec.shape is TINY else spec.shape.vocab_size
    config = spec.shape.config(vocab_size)
    # Stop at the end of a chat turn or of a plain document, as Qwen's own configs list both.
    config["eos_token_id"] = [tokenizer.token_to_id(IM_END), tokenizer.token_to_id(PAD)]

    mx.random.seed(spec.seed)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    if spec.pretrain_steps:
        _pretrain(model, tokenizer, spec.pretrain_steps, spec.seed)
    dtype = getattr(mx, spec.dtype)
    model.update(tree_map(lambda p: p.astype(dtype), model.parameters()))
    if spec.bits:
        model, config = quantize_model(model, config, group_size=64, bits=spec.bits)
    mx.eval(model.parameters())

    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        save_model(tmp, model)
        save_config(config, tmp / "config.json")
        save_tokenizer(tokenizer, tmp, config["max_position_embeddings"])
        (tmp / "workbench_build.json").write_text(
            json.dumps({"name": spec.name, "bits": spec.bits, "dtype": spec.dtype,
                        "pretrain_steps": spec.pretrain_steps, "seed": spec.seed}, indent=2)
        )
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _pretrain(model: nn.Module, tokenizer, steps: int, seed: int) -> None:
    """A few hundred steps on the project's text: enough to speak its sentences and chat format."""
    from jinja2 import Template

    template = Template(CHAT_TEMPLATE)
    samples = []
    for line in corpus_lines():
        qa = _QA_LINE.match(line)
        if qa:
            messages = [{"role": "user", "content": qa["ask"]},
                        {"role": "assistant", "content": qa["say"]}]
            line = template.render(messages=messages, add_generation_prompt=False)
        else:
            line += PAD
        samples.append((tokenizer.encode(line).ids, 0))

    optimizer = optim.Adam(learning_rate=optim.cosine_decay(3e-3, steps, 3e-4))
    loss_and_grad = nn.value_and_grad(model, default_loss)

    state = [model.state, optimizer.state]

    def step(batch, lengths):
        (loss, _), grads = loss_and_grad(model, batch, lengths)
        optimizer.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)
    batches = iterate_batches(samples, batch_size=8, max_seq_length=256, loop=True, seed=seed)
    for _, (batch, lengths) in zip(range(steps), batches):
        mx.eval(step(batch, lengths), state)


@contextmanager
def _file_lock(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
