"""A preference run's rewards on a loss plot: the reward margin (and the reward accuracy) per step on
an axis of their own at the right (docs/architecture.md, "Preference training")."""

from __future__ import annotations


def draw_rewards(axes, steps: list, label: str = "", color=None, fresh: bool = True) -> int:
    """The reward margin per step (a dashed line) and, without a label, the reward accuracy (dotted)
    on a second y axis beside `axes`; answers how many margin points. Steps without rewards (not a
    dpo or orpo run) draw nothing. `fresh`: the previous drawing's second axis goes; else (the next
    run on a comparison) its curves join it."""
    twins = [other for other in axes.figure.axes if other is not axes]
    if fresh:
        for other in twins:
            other.remove()
        twins = []
    margin = [(s.step, s.reward_margin) for s in steps if s.reward_margin is not None]
    if not margin:
        return 0
    right = twins[0] if twins else axes.twinx()
    prefix = f"{label} " if label else ""
    right.plot(*zip(*margin), "--", color=color or "C2", label=f"{prefix}reward margin")
    if not label:
        accuracy = [(s.step, s.reward_accuracy) for s in steps if s.reward_accuracy is not None]
        right.plot(*zip(*accuracy), ":", color="C3", label="reward accuracy")
    right.set_ylabel("reward")
    right.legend(fontsize=8, loc="upper right")
    return len(margin)
