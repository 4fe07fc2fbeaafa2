"""lm-eval's results and logged samples as plain JSON: what a store, an API and a table can hold.

lm-eval keeps each item's prompt, choices, responses and scores under keys that depend on the task's
output type; here each item becomes one flat dict with the same keys whatever the task.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_TEXT = 4096  # characters kept of a prompt, target or response


def plain(value: Any) -> Any:
    """A JSON value: NaN and infinities (and lm-eval's "N/A" standard errors) become None."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # float(): numpy's float64 too
    if isinstance(value, str):
        return None if value == "N/A" else value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # numpy and mlx scalars
        return plain(value.item())
    return _cut(str(value))


def plain_results(results: dict) -> dict[str, dict]:
    """Each task's metrics and standard errors as lm-eval names them, "<metric>,<filter>" ("acc,none",
    "acc_stderr,none", "exact_match,last_number"); its bookkeeping (name, alias, sample_len) left out:
    n_samples says how many items were scored."""
    return {task: {key: plain(value) for key, value in metrics.items() if "," in key}
            for task, metrics in results.items()}


def plain_samples(samples: dict[str, list[dict]]) -> list[dict]:
    return [plain_sample(task, logged) for task, items in samples.items() for logged in items]


def plain_sample(task: str, logged: dict) -> dict:
    """One item: its prompt, target and response, and each metric's score."""
    arguments = logged.get("arguments") or []
    choices = [args[1] for args in arguments if len(args) > 1 and isinstance(args[1], str)]
    filtered = logged.get("filtered_resps") or []
    item = {
        "task": task,
        "doc_id": logged.get("doc_id"),
        "filter": logged.get("filter"),
        "prompt": _cut(arguments[0][0]) if arguments and arguments[0] else None,
        "target": _target(logged.get("target"), choices),
        "response": None,
        "raw_response": None,  # a generation before the task's filters extracted its answer
        "choices": [_cut(c) for c in choices] or None,
        "loglikelihoods": None,
    }
    if choices and filtered and all(isinstance(r, (list, tuple)) for r in filtered):
        # Multiple choice: each choice's (loglikelihood, is_greedy); the answer is the likeliest.
        scores = [float(r[0]) for r in filtered]
        item["loglikelihoods"] = plain(scores)
        item["response"] = item["choices"][max(range(len(scores)), key=scores.__getitem__)]
    elif filtered:
        item["response"] = _cut(_text(filtered[0]))
        raw = (logged.get("resps") or [[None]])[0]
        if raw and _text(raw[0]) != _text(filtered[0]):
            item["raw_response"] = _cut(_text(raw[0]))
    for metric in logged.get("metrics", []):
        if metric not in item:
            item[metric] = plain(logged.get(metric))
    return item


def _target(target: Any, choices: list[str]) -> Any:
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(choices):
        return _cut(choices[target])
    if isinstance(target, list):
        return [_target(t, choices) for t in target]
    return _cut(target) if isinstance(target, str) else plain(target)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _text(value[0])
    return json.dumps(plain(value))


def _cut(text: Any) -> Any:
    return text[:MAX_TEXT] if isinstance(text, str) else text
