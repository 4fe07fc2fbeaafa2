"""The grammar libraries bench/constrained.py weighs against llguidance (the one the workbench uses,
workbench/providers/grammar.py): xgrammar and outlines-core, each behind the same `processor()` as
the workbench's Constraint, so the engine runs them the same way and only the library differs.

Each fills a bitmask of the same layout (one bit per token, int32 words) that is applied to the logits
the same way; each needs its own view of the tokenizer.
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np


def _masker(vocab: int, fill, advance, stop: set[int]):
    """A logits processor: `advance(token)` after each sampled token, `fill(bitmask)` before each step.

    The batch computes one step past a sequence's eos before it leaves: that step is not masked."""
    bitmask = np.zeros((1, (vocab + 31) // 32), dtype=np.int32)
    started, ended = False, False

    def process(tokens, logits):
        nonlocal started, ended
        if started and not ended:
            token = int(tokens[-1].item())
            ended = token in stop
            if not ended:
                advance(token)
        started = True
        if ended:
            return logits
        fill(bitmask)
        allowed = np.unpackbits(bitmask.view(np.uint8), count=vocab, bitorder="little").astype(bool)
        width = logits.shape[-1]
        allowed = np.pad(allowed, (0, max(width - allowed.size, 0)))[:width]
        return mx.where(mx.array(allowed), logits, -mx.inf)

    return process


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab: int):
        import xgrammar

        self._xgr = xgrammar
        hf = tokenizer._tokenizer
        self.info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=vocab,
                                                            stop_token_ids=sorted(tokenizer.eos_token_ids))
        self.compiler = xgrammar.GrammarCompiler(self.info)
        self.stop = set(tokenizer.eos_token_ids)
        self.vocab = vocab

    def constraint(self, schema: dict):
        compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        xgr, vocab, stop = self._xgr, self.vocab, self.stop

        class _Constraint:
            def processor(self):
                import torch

                matcher = xgr.GrammarMatcher(compiled)
                return _masker(vocab, lambda mask: matcher.fill_next_token_bitmask(torch.from_numpy(mask)),
                               matcher.accept_token, stop)

        return _Constraint()


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab: int):
        import outlines_core

        self._oc = outlines_core
        hf = tokenizer._tokenizer
        # outlines-core wants each token's text as bytes: undo byte-level BPE's printable alphabet.
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        special = set(hf.all_special_ids)
        eos = sorted(tokenizer.eos_token_ids)[0]
        tokens: dict[bytes, list[int]] = {}
        for text, ident in hf.get_vocab().items():
            if ident in special:
                continue
            tokens.setdefault(bytes(byte_of[c] for c in text), []).append(ident)
        self.vocabulary = outlines_core.Vocabulary(eos, tokens)
        self.vocab = vocab
        self.eos = set(tokenizer.eos_token_ids)

    def constraint(self, schema: dict):
        regex = self._oc.json_schema.build_regex_from_schema(json.dumps(schema), whitespace_pattern="")
        index = self._oc.Index(regex, self.vocabulary)
        oc, vocab, stop = self._oc, self.vocab, self.eos

        class _Constraint:
            def processor(self):
                guide = oc.Guide(index)
                return _masker(vocab, lambda mask: guide.write_mask_into(mask.ctypes.data, mask.size,
                                                                         mask.itemsize),
                               guide.advance, stop)

        return _Constraint()
