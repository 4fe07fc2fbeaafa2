"""DPO's and ORPO's losses against a hand computation and against mlx-lm-lora's, the base model as
DPO's reference, and the preference format's rows read and refused."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm_lora.trainer.dpo_trainer import dpo_loss as their_dpo_loss
from mlx_lm_lora.trainer.orpo_trainer import orpo_loss as their_orpo_loss

import workbench  # noqa: F401  (before mlx)
from workbench.data import BadRow, convert_row, detect_format
from workbench.training import preference

# Summed answer log-probabilities of 3 pairs: policy chosen, policy rejected, reference chosen, rejected.
PC, PR, RC, RR = [-4.0, -7.5, -2.0], [-6.0, -5.0, -9.0], [-5.0, -7.0, -3.0], [-5.5, -6.0, -8.0]
BETA = 0.1


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def by_hand(variant: str) -> list[float]:
    out = []
    for pc, pr, rc, rr in zip(PC, PR, RC, RR):
        h = (pc - rc) - (pr - rr)
        out.append({"sigmoid": -math.log(sigmoid(BETA * h)), "hinge": max(0.0, 1 - BETA * h),
                    "ipo": (h - 1 / (2 * BETA)) ** 2}[variant])
    return out


@pytest.mark.parametrize("variant", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_equals_the_hand_computation(variant):
    losses, chosen, rejected = preference.dpo_loss(*map(mx.array, (PC, PR, RC, RR)), BETA, variant)

    assert losses.tolist() == pytest.approx(by_hand(variant), rel=1e-5)
    assert chosen.tolist() == pytest.approx([BETA * (c - r) for c, r in zip(PC, RC)], rel=1e-5)
    assert rejected.tolist() == pytest.approx([BETA * (c - r) for c, r in zip(PR, RR)], rel=1e-5)


@pytest.mark.parametrize("variant", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_matches_mlx_lm_lora(variant):
    scores = list(map(mx.array, (PC, PR, RC, RR)))
    ones = mx.ones((3, 4))
    theirs, reward, _, _ = their_dpo_loss(*scores, ones, ones, beta=BETA, delta=0.0, loss_type=variant)
    ours, chosen, rejected = preference.dpo_loss(*scores, BETA, variant)

    assert ours.mean().item() == pytest.approx(theirs.item(), rel=1e-5)
    assert [chosen.mean().item(), rejected.mean().item()] == pytest.approx(reward.tolist(), rel=1e-5)


def test_orpo_loss_equals_the_hand_computation_and_mlx_lm_lora():
    chosen, rejected = [-0.5, -1.2, -0.05], [-0.9, -0.7, -2.5]  # per-token mean log-probabilities
    lam = 0.25
    expected = []
    for c, r in zip(chosen, rejected):
        log_odds = (c - math.log(1 - math.exp(c))) - (r - math.log(1 - math.exp(r)))
        expected.append(-c - lam * math.log(sigmoid(log_odds)))

    losses, chosen_reward, rejected_reward = preference.orpo_loss(mx.array(chosen), mx.array(rejected), lam)

    assert losses.tolist() == pytest.approx(expected, rel=1e-5)
    assert chosen_reward.tolist() == pytest.approx([lam * c for c in chosen], rel=1e-5)
    ones = mx.ones((3, 4))
    theirs, _, _, _ = their_orpo_loss(mx.array(chosen), 0.0, mx.array(rejected), 0.0, ones, ones, 1.0, beta=lam)
    assert losses.mean().item() == pytest.approx(theirs.item(), rel=1e-5)


def test_reward_accuracy_is_the_share_of_pairs_ranked_right():
    # Pairs 1 and 3 rank the chosen answer higher against the reference, pair 2 does not.
    _, chosen, rejected = preference.dpo_loss(*map(mx.array, (PC, PR, RC, RR)), BETA)
    sums = [0.0, chosen.sum().item(), rejected.sum().item(), (chosen > rejected).sum().item()]
    measured = preference.measures(sums, 3)
    assert measured["reward_accuracy"] == pytest.approx(2 / 3)
    assert measured["reward_margin"] == pytest.approx(measured["chosen_reward"] - measured["rejected_reward"])


def test_the_reference_is_the_base_model_with_the_adapter_switched_off(models_dir):
    import mlx_lm
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(f"{models_dir}/tiny")  # a copy of its own: LoRA layers go into it
    tokens = mx.array(np.random.default_rng(0).integers(5, 200, (2, 12)), dtype=mx.int32)
    spans = mx.array([[4, 11], [6, 11]])
    base, _ = preference.sequence_logps(model, tokens, spans)
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {"rank": 4, "scale": 2.0, "dropout": 0.0})
    for _, module in model.named_modules():  # a trained adapter: its B no longer zero
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.05
    adapted, _ = preference.sequence_logps(model, tokens, spans)
    with preference.adapters_off(model) as switched:
        reference, _ = preference.sequence_logps(model, tokens, spans)
    after, _ = preference.sequence_logps(model, tokens, spans)

    assert switched == 7 * len(model.layers)  # every linear layer of every block
    assert np.allclose(reference, base, atol=1e-4)
    assert not np.allclose(adapted, base, atol=1e-2)
    assert np.allclose(after, adapted, atol=1e-5)  # switched back on


# The format -----------------------------------------------------------------------------------------


def test_preference_rows_read_as_text_messages_or_conversational_answers():
    plain = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
    chat = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
            "chosen": {"role": "assistant", "content": "Hello."},
            "rejected": [{"role": "assistant", "content": "Go away."}]}

    assert detect_format(plain) == detect_format(chat) == "preference"
    assert convert_row(plain, "preference") == {"messages": [{"role": "user", "content": "Hi?"}],
                                                "chosen": "Hello.", "rejected": "Go away."}
    assert convert_row(chat, "preference")["messages"][0] == {"role": "system", "content": "Be kind."}
    assert convert_row(chat, "preference")["rejected"] == "Go away."


@pytest.mark.parametrize("row, problem", [
    ({"prompt": "Hi?", "rejected": "No."}, "missing key 'chosen'"),
    ({"prompt": "Hi?", "chosen": "Yes."}, "missing key 'rejected'"),
    ({"chosen": "Yes.", "rejected": "No."}, "missing the prompt"),
    ({"prompt": "Hi?", "chosen": " ", "rejected": "No."}, "'chosen' is empty"),
    ({"prompt": "Hi?", "chosen": {"role": "user", "content": "x"}, "rejected": "No."}, "assistant message"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
      "chosen": "Yes.", "rejected": "No."}, "must end before the answer"),
])
def test_a_preference_row_is_refused_with_what_is_wrong(row, problem):
    with pytest.raises(BadRow, match=problem):
        convert_row(row, "preference")


def test_a_preference_set_is_read_through_datasets_with_conversational_answers(settings):
    from workbench.data import DataSpec, prepare

    rows = [{"messages": [{"role": "user", "content": f"Say {i}."}],
             "chosen": [{"role": "assistant", "content": f"{i}."}],
             "rejected": [{"role": "assistant", "content": "No."}]} for i in range(10)]
    folder = settings.home_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prefs.json").write_text(json.dumps(rows))  # a .json file goes through `datasets`

    examples = prepare(DataSpec(dataset="mine", dataset_path="prefs.json", validation_split=0.2), settings)

    assert examples.summary.format == "preference" and examples.summary.train_rows == 8
    assert all(row["rejected"] == "No." and row["messages"][0]["role"] == "user" for row in examples.train)
