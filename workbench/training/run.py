"""One training run on mlx-lm's tuner pieces: full-parameter SFT, LoRA, QLoRA, DoRA, or DPO / ORPO
on preference pairs (LoRA-based; their losses and batches: preference.py).

mlx-lm's own `train()` saves adapters only, does not seed its batch order and can only be stopped by
raising from a callback; this loop uses the same pieces (`linear_to_lora_layers`, `default_loss`,
`evaluate`) and adds what a resumable job needs: a batch order of its own (`batching.DataOrder`:
mlx-lm's `iterate_batches` draws from numpy's global generator, as its validation does), checkpoints
holding the optimizer state, step, data position and random state, and a clean stop between steps;
and what mlx-lm's adapter lacks: the best validation loss's weights published, and an early stop
(`selection.py`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map
from mlx_lm.tuner.trainer import evaluate, grad_checkpoint
from mlx_lm.tuner.utils import linear_to_lora_layers

from workbench.data import Examples, tokenize
from workbench.errors import InputError
from workbench.models import adapters
from workbench.training import batching, checkpoint, fastmath, faults, losses, optimizers, policy, preference
from workbench.training.config import TrainingConfig
from workbench.training.distributed import Ranks
from workbench.training.reporter import Reporter
from workbench.training.selection import Selection

_MB = 1024 * 1024


class LossNotFinite(RuntimeError):
    """The loss turned NaN or infinite: the weights are ruined, so the run fails and publishes nothing."""

    def __init__(self, what: str, step: int, value: float):
        super().__init__(f"{what} became {value} at step {step}: training diverged (lower learning_rate, "
                         f"weight_decay or lora_alpha, or set max_grad_norm); the last good checkpoint "
                         f"is kept and no adapter was published")
        self.step = step


@dataclass
class RunOutcome:
    status: str  # "completed" or the stop reason ("stopped", "interrupted")
    step: int
    adapter_path: Path | None = None
    # A completed run's trained model and its tokenizer, for a judge to question.
    model: nn.Module | None = None
    tokenizer: Any = None


class TrainingRun:
    """`TrainingRun(config, model_path, examples, run_dir, settings, reporter).run()`: trains on the
    rows `examples` holds (workbench.data.prepare), writes checkpoints and the adapter under `run_dir`."""

    def __init__(self, config: TrainingConfig, model_path: str, examples: Examples, run_dir: Path, settings,
                 reporter: Reporter, should_stop=lambda: None, ranks: Ranks | None = None):
        self.config = config
        self.model_path = model_path
        self.examples = examples
        self.run_dir = run_dir
        self.settings = settings
        self.reporter = reporter
        self.should_stop = should_stop  # returns None, or why to stop now
        self.ranks = ranks or Ranks()  # data-parallel ranks (workbench/training/distributed.py)
        self.policy = policy.choose(config.memory_limit_mb, config.cache_limit_mb, config.fast_kernels)
        self.lora_keys: list[str] | None = None  # mlx-lm's paths of lora_targets, once the model is known
        self.selection = Selection(config.early_stopping_patience)
        self.selects_best = False  # whether the adapter publishes the best weights (known with the data)
        self.checkpointed_best: int | None = None  # the best step the latest checkpoint names
        self.best_dir = run_dir / "best"

    # Setting up ---------------------------------------------------------------------------------

    def load_model(self):
        import mlx_lm

        self.reporter.phase("loading_model", f"loading {self.model_path}")
        model, tokenizer, config = mlx_lm.load(self.model_path, return_config=True)
        already_quantized = "quantization" in config
        cfg = self.config
        if cfg.training_type == "sft" and already_quantized:
            raise InputError("training_type", "sft cannot train a quantized model's weights; use qlora")
        if cfg.quantization_bits and not already_quantized:
            # The base of qlora, or of dora, dpo or orpo when quantization is set: quantized from the
            # stored weights, before any cast (a cast first would only be thrown away).
            nn.quantize(model, group_size=64, bits=cfg.quantization_bits)
        switched = policy.prepare(model, self.policy)
        if switched:
            self.reporter.note(f"{switched} quantized layers multiply through BLAS, dequantized just in time")
        if cfg.training_type == "sft":
            model.unfreeze()
        else:
            model.freeze()
            self.lora_keys = lora_keys(model, cfg.lora_targets) if cfg.lora_targets else None
            linear_to_lora_layers(model, self._lora_layers(model), self._lora_parameters(),
                                  use_dora=cfg.training_type == "dora")
            policy.adapt_lora(model, self.policy)
        if cfg.gradient_checkpointing:
            grad_checkpoint(model.layers[0])
        # Do the cast and quantization now, in the loading phase, not lazily inside step 1.
        mx.eval(model.parameters())
        # The weights replaced by the cast or the quantization went to MLX's cache, which the CPU
        # policy lets grow to the memory limit: give them back, or QLoRA would hold the fp32 model.
        mx.clear_cache()
        return model, tokenizer

    def _calibrate(self, model) -> None:
        """Settle the CPU choices the job left to measurement, then report the policy it runs."""
        cfg = self.config
        self.policy = policy.calibrated(self.policy, model, cfg.batch_size, cfg.max_seq_length,
                                        self.settings.home_dir, cfg.fast_kernels, cfg.cache_limit_mb)
        # Every rank computes with rank 0's kernels: their weights must stay the same.
        self.policy = replace(self.policy, fast_kernels=self.ranks.lead_kernels(self.policy.fast_kernels))
        measured = self.policy.calibration
        if measured:
            how = "as measured before on this machine" if measured["cached"] else \
                f"measured in {measured['seconds']} s"
            fast, cache = ", ".join(self.policy.fast_kernels) or "none", self.policy.cache_limit_mb
            self.reporter.note(f"CPU kernels: fast exp for {fast}, cache limit {cache} MB ({how})",
                               {"calibration": measured})
        policy.apply_limits(self.policy)
        self.reporter.policy(self.policy.as_dict())

    def _lora_layers(self, model) -> int:
        wanted = self.config.lora_layers
        return len(model.layers) if wanted == -1 else min(wanted, len(model.layers))

    def _lora_parameters(self) -> dict:
        """mlx-lm's LoRA settings; `keys` (the layers within a block) only when the config names them."""
        cfg = self.config
        chosen = {"rank": cfg.lora_rank, "scale": cfg.lora_alpha / cfg.lora_rank, "dropout": cfg.lora_dropout}
        if self.lora_keys:
            chosen["keys"] = self.lora_keys
        return chosen

    def adapter_config(self, model) -> dict:
        """mlx-lm's adapter_config.json, plus what the workbench needs to serve it again."""
        cfg = self.config
        return adapters.adapter_config(
            model, base_model=self.model_path, model_name=cfg.model_name or self.settings.default_model,
            training_type=cfg.training_type, num_layers=self._lora_layers(model),
            lora_parameters=self._lora_parameters(), quantization_bits=cfg.quantization_bits)

    def total_steps(self, train_rows: int) -> int:
        cfg = self.config
        if cfg.max_steps:
            return cfg.max_steps
        per_epoch = max(train_rows // cfg.batch_size, 1)
        return max(math.ceil(per_epoch * cfg.num_epochs / cfg.gradient_accumulation_steps), 1)

    # Running ------------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> RunOutcome:
        """Trains (from the latest checkpoint when `resume`); with `report_to`, rank 0 also reports to
        the trackers (workbench/training/trackers.py), whose runs end with this one."""
        if not (self.config.report_to and self.ranks.lead):
            return self._run(resume)
        from workbench.training.trackers import Tracked

        self.reporter = tracked = Tracked(self.reporter, self.config, self.run_dir, self.settings)
        status = "failed"
        try:
            outcome = self._run(resume)
            status = outcome.status
            return outcome
        finally:
            tracked.close(status)

    def _run(self, resume: bool) -> RunOutcome:
        cfg = self.config
        mx.random.seed(cfg.seed)
        policy.apply_limits(self.policy)
        model, tokenizer = self.load_model()
        self._calibrate(model)

        self.reporter.phase("loading_data", f"preparing {cfg.dataset_path or cfg.dataset}")
        data = tokenize(self.examples, cfg, tokenizer, pairs=cfg.preference)
        train, skipped = (preference.trainable if cfg.preference else batching.trainable)(data.train)
        if skipped:
            self.reporter.note(f"{skipped} of {len(data.train)} training rows are left out: their "
                               f"prompt fills max_seq_length ({cfg.max_seq_length}): nothing to learn",
                               {"rows_left_out": skipped})
        if len(train) < cfg.batch_size:
            raise InputError("batch_size", f"{cfg.batch_size} exceeds the {len(train)} training rows")
        cfg.check_rows(len(self.examples.valid))
        self.selects_best = cfg.selects_best(data.valid is not None)
        total = self.total_steps(len(train))
        optimizer = optimizers.build(self.config, optimizers.schedule(self.config, total))

        start, order = 0, self._order(train)
        saved = checkpoint.load_latest(self.run_dir / "checkpoints") if resume else None
        if saved is not None:
            model.load_weights(list(saved.weights.items()), strict=False)
            # Before the compiled step is built: assigning state to a compiled function's captured
            # optimizer afterwards fails ("eval an array without a primitive").
            optimizer.init(model.trainable_parameters())
            optimizer.state = saved.optimizer_state
            start = saved.step
            order = self._restore_randomness(saved, train)
            self.selection = Selection.restored(cfg.early_stopping_patience, saved.extra)
            self.checkpointed_best = self.selection.best_step
            self.reporter.phase("training", f"resuming from step {start}")

        # The fast SwiGLU and attention must be in place while the step is traced (at its first call,
        # and again at each new batch shape), so for the whole loop.
        with fastmath.model_kernels(model, self.policy.fast_kernels) as swapped:
            if swapped:
                self.reporter.note(f"the model's {' and '.join(swapped)} use the fast exp (measured faster "
                                   "on this CPU)", {"fast_kernels": swapped})
            step, stopped = self._train(model, optimizer, order, data, start, total)
        if stopped:
            return RunOutcome(stopped, step)
        # Rank 0 writes the checkpoint and the adapter; every rank takes part in the test loss.
        adapter = self._publish(model, optimizer, step, order) if self.ranks.lead else None
        self._test(model, data.test, step)
        return RunOutcome("completed", step, adapter, model, tokenizer)

    def _publish(self, model, optimizer, step: int, order: batching.DataOrder) -> Path:
        """The final checkpoint, where the last weights stay, then the adapter of the selected weights,
        which the model then holds (for the test loss and a judge)."""
        self.reporter.phase("saving", "writing the final checkpoint and adapter")
        self.reporter.checkpoint(step, self._save(model, optimizer, step, order))
        best = self.selection.best_step if self.selects_best else None
        selected, chosen = ("best", best) if best is not None else ("last", step)
        if chosen != step:
            weights = mx.load(str(checkpoint.best_path(self.best_dir, chosen)))
            model.load_weights(list(weights.items()), strict=False)
        adapter = checkpoint.save_adapter(self.run_dir / "adapters", model, self.adapter_config(model))
        self.reporter.published(selected, chosen, adapter)
        return adapter

    def _test(self, model, test, step: int) -> None:
        """`mlx_lm lora --test`'s loss over the whole test split, of the published weights: rank 0's
        (the other ranks evaluate no batch, only joining evaluate's sums)."""
        if test is None:
            return
        cfg = self.config
        self.reporter.phase("evaluating", f"test loss over {len(test)} rows")
        test_loss = evaluate(model, test, batch_size=min(cfg.batch_size, len(test)),
                             num_batches=-1 if self.ranks.lead else 0, max_seq_length=cfg.max_seq_length,
                             **self._evaluation(batching.every_batch))
        self.reporter.evaluation(step, {"test_loss": float(test_loss)})

    def _shard(self) -> tuple[int, int]:
        return self.ranks.rank, self.ranks.size

    def _order(self, train, position: dict | None = None) -> batching.DataOrder:
        """The training batches' order: of rows, or of preference pairs (never packed)."""
        cfg = self.config
        pairs = {"collate": preference.pair_batch, "length": preference.pair_length} if cfg.preference else {}
        return batching.DataOrder(train, cfg.batch_size, cfg.max_seq_length, cfg.seed, cfg.group_by_length,
                                  cfg.packing, position, shard=self._shard(), **pairs)

    def _loss(self):
        """The training loss: mlx-lm's cross-entropy (padded or packed), or DPO's or ORPO's."""
        cfg = self.config
        fast = "loss" in self.policy.fast_kernels
        if cfg.preference:
            return preference.loss_function(cfg.training_type, cfg.beta, cfg.dpo_loss,
                                            losses.cross_entropy if fast else nn.losses.cross_entropy)
        return losses.loss_function(cfg.packing, fast)

    def _evaluation(self, batches):
        """mlx-lm's `evaluate` arguments for a loss over held-out data: its loss and batches."""
        if not self.config.preference:
            return {"iterate_batches": batches}
        loss = self._loss()
        # The same draws as the rows' batches would take: every one, or the (seed, step) sample.
        pairs = (preference.every_pair if batches is batching.every_batch
                 else partial(preference.validation_pairs, **batches.keywords))
        return {"loss": lambda model, *arrays: loss(model, *arrays)[:2], "iterate_batches": pairs}

    def _restore_randomness(self, saved: checkpoint.Checkpoint, train) -> batching.DataOrder:
        """The data order where the checkpoint left it, and dropout's generator as it was then."""
        cfg = self.config
        position = saved.extra.get("data_order")
        order = self._order(train, position)
        if position is None:  # a checkpoint from before the order's position was saved
            order.skip(saved.extra.get("batches_used", saved.step * cfg.gradient_accumulation_steps))
        key = saved.extra.get("random_key")
        if key is not None:
            # mx.random.seed(s) sets the key to (s >> 32, s & 0xffffffff): the saved key, exactly.
            mx.random.seed((int(key[0]) << 32) | int(key[1]))
        return order

    def _train(self, model, optimizer, batches: batching.DataOrder, data, start: int,
               total: int) -> tuple[int, str | None]:
        """Steps `start + 1` to `total`, with evaluations and checkpoints on the way. Returns the last
        step done, and why it stopped short of `total` if it did."""
        cfg = self.config
        one_step = self._step_function(model, optimizer)

        self.reporter.phase("training", f"training steps {start + 1} to {total}")
        model.train()
        mx.reset_peak_memory()
        step = start
        while step < total:
            reason = self.should_stop()
            if self.ranks.any(reason is not None):  # every rank stops at the same step
                if self.ranks.lead:
                    self.reporter.checkpoint(step, self._save(model, optimizer, step, batches))
                return step, reason or "stopped"
            loss, tokens, elapsed, counts, each_rank, rewards = one_step(batches)
            step += 1
            faults.reach("step", step)
            if not math.isfinite(loss):
                raise LossNotFinite("the training loss", step, loss)
            if self.ranks.size > 1:
                self.reporter.ranks(each_rank)
            self.reporter.step(step, total, {
                "loss": loss, "learning_rate": float(optimizer.learning_rate), "tokens": tokens,
                # Trained tokens (as mlx-lm counts them), real input tokens, and every position
                # computed on, padding included: the gap between the last two is padding's cost.
                "tokens_per_s": tokens / elapsed if elapsed else None,
                "useful_tokens_per_s": counts.tokens / elapsed if elapsed else None,
                "raw_tokens_per_s": counts.positions / elapsed if elapsed else None,
                "peak_memory_mb": mx.get_peak_memory() / _MB, **rewards,
            })
            if data.valid is not None and (step % cfg.eval_steps == 0 or step == total):
                self._validate(model, data.valid, step)
                if self.selection.exhausted and step < total:
                    self.reporter.note(self.selection.early_stop(step), {"early_stop": step,
                                                                        **self.selection.state()})
                    return step, None
                if step < total:
                    self.reporter.phase("training", f"training steps {step + 1} to {total}")
            if step % cfg.save_every == 0 and step < total and self.ranks.lead:
                self.reporter.checkpoint(step, self._save(model, optimizer, step, batches))
        return step, None

    def _validate(self, model, valid, step: int) -> None:
        """The validation loss at `step`; a new best's weights are kept (by rank 0) when the adapter
        will publish them."""
        cfg = self.config
        self.reporter.phase("evaluating", f"validation loss at step {step}")
        val_loss = evaluate(model, valid, batch_size=min(cfg.batch_size, len(valid)),
                            num_batches=cfg.eval_batches, max_seq_length=cfg.max_seq_length,
                            **self._evaluation(partial(batching.validation_batches, seed=cfg.seed,
                                                       step=step)))
        model.train()
        if not math.isfinite(val_loss):
            raise LossNotFinite("the validation loss", step, val_loss)
        self.reporter.evaluation(step, {"eval_loss": float(val_loss)})
        if self.selection.observe(step, float(val_loss)):
            if self.selects_best and self.ranks.lead:
                checkpoint.save_best(self.best_dir, step, model, keep=self.checkpointed_best)
            self.reporter.best(step, float(val_loss))
        faults.reach("after_eval", step)

    def _step_function(self, model, optimizer):
        """The compiled micro-step, shaped as mlx-lm's own: gradients add up over micro-batches and
        the optimizer updates on the last one (gradients clipped to `max_grad_norm`)."""
        cfg = self.config
        loss_and_grad = nn.value_and_grad(model, self._loss())
        state = [model.state, optimizer.state, mx.random.state]
        ranks = self.ranks

        @partial(mx.compile, inputs=state, outputs=state)
        def step(arrays, previous, do_update):
            # `own`: what the loss is a mean over (trained tokens; pairs for dpo / orpo); `sums`: a
            # preference step's figures to add up (preference.SUMS).
            (loss, own, *sums), grads = loss_and_grad(model, *arrays)
            # Over every rank's share of the batch: the gradient and loss one process would get.
            grads = ranks.weighted_gradients(grads, own)
            loss, tokens = ranks.mean_loss(loss, own)
            if previous is not None:
                grads = tree_map(lambda a, b: a + b, grads, previous)
            if do_update:
                if cfg.gradient_accumulation_steps > 1:
                    grads = tree_map(lambda g: g / cfg.gradient_accumulation_steps, grads)
                if cfg.max_grad_norm:
                    grads, _ = optim.clip_grad_norm(grads, cfg.max_grad_norm)
                optimizer.update(model, grads)
                grads = None
            return loss, tokens, own, grads, sums

        def one_step(batches):
            """Loss and trained tokens (over every rank), the seconds the step's compute took (not
            the batch fetch), the real and padded token counts of its batches, and each rank's own
            trained tokens per second and peak memory."""
            micro_batches = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
            tic = time.perf_counter()
            weighted, counts, mine, grads, added = [], [], [], None, mx.zeros(len(preference.SUMS))
            for micro, batch in enumerate(micro_batches, 1):
                last = micro == cfg.gradient_accumulation_steps
                loss, tokens, own, grads, sums = step(batch.arrays, grads, last)
                weighted.append(loss * tokens)
                counts.append(tokens)
                if sums:  # a preference step: its trained tokens are in its sums, not in `own` (pairs)
                    added = added + sums[0]
                    own = sums[0][0]
                mine.append(own)
            total = sum(counts)
            loss = sum(weighted) / total
            mx.eval(loss, total, mine, state, added)
            elapsed = time.perf_counter() - tic
            # One all-reduce: the batches' token counts summed, and each rank's speed and peak
            # memory in its own slots.
            speeds, peaks = [0.0] * ranks.size, [0.0] * ranks.size
            speeds[ranks.rank] = sum(m.item() for m in mine) / elapsed
            peaks[ranks.rank] = mx.get_peak_memory() / _MB
            counted = [sum(b.tokens for b in micro_batches), sum(b.positions for b in micro_batches)]
            summed = ranks.total(mx.array([*counted, *speeds, *peaks, *added.tolist()])).tolist()
            sizes = batching.Batch((), int(summed[0]), int(summed[1]))
            each = {"tokens_per_s": summed[2:2 + ranks.size],
                    "peak_memory_mb": summed[2 + ranks.size:2 + 2 * ranks.size]}
            if not cfg.preference:
                return loss.item(), int(total.item()), elapsed, sizes, each, {}
            pairs, sums = total.item(), summed[2 + 2 * ranks.size:]
            return loss.item(), int(sums[0]), elapsed, sizes, each, preference.measures(sums, pairs)

        return one_step

    def _save(self, model, optimizer, step: int, order: batching.DataOrder) -> Path:
        """A checkpoint holding every source of randomness beside the weights and optimizer state:
        the data order's position and dropout's `mx.random` key (validation draws depend on the
        seed and the step only), so a resumed run repeats the uninterrupted one's losses."""
        mx.eval(model.trainable_parameters(), optimizer.state, mx.random.state)
        batches_used = step * self.config.gradient_accumulation_steps
        key = [int(k) for k in mx.random.state[0].tolist()]
        saved = checkpoint.save(self.run_dir / "checkpoints", step, model, optimizer,
                                {"seed": self.config.seed, "batches_used": batches_used,
                                 "data_order": order.position(), "random_key": key, **self.selection.state()})
        # A resume from this checkpoint returns to its best: older bests can go.
        self.checkpointed_best = self.selection.best_step
        checkpoint.prune_best(self.best_dir, {self.checkpointed_best})
        return saved


def lora_keys(model: nn.Module, targets: list[str]) -> list[str]:
    """The paths within a block (mlx-lm's LoRA `keys`) of the linear layers that `targets` name, by
    name (`q_proj`) or by path (`self_attn.q_proj`)."""
    paths = sorted({path for block in model.layers for path, module in block.named_modules()
                    if isinstance(module, (nn.Linear, nn.QuantizedLinear))})
    keys = []
    for target in targets:
        matches = [p for p in paths if p == target or p.endswith("." + target)]
        if not matches:
            names = sorted({p.rsplit(".", 1)[-1] for p in paths})
            raise InputError("lora_targets", f"{target!r} names no linear layer of this model's blocks; "
                                             f"they are {', '.join(names)}")
        keys += [p for p in matches if p not in keys]
    return keys
