"""Writes the shipped evaluation items: arith_mc.jsonl, arith_gen.jsonl, count_gen.jsonl,
zorbish_mc.jsonl, zorbish_gen.jsonl.

The items ask what the workbench's sample data sets teach (workbench/data/samples/make_samples.py),
in the same words, but about numbers those samples do not use, so that a score measures whether a
model learnt the skill rather than the rows:
- arithmetic: "What is 47 plus 25?" with two-digit operands (the samples' arithmetic rows pair
  2..60 with 2..40; every question found in a sample file is left out). Multiple choice among the
  right sum or difference, the other operation's answer and off-by-one and off-by-ten numbers, each
  written as the samples answer ("47 plus 25 is 72."); or generated, scored on the last number.
- counting: "Count from 57 to 62." starting at 30..90 (the samples start at 1..20), scored on the
  whole list of numbers.

What the tiny model can learn: its tokenizer writes every digit as its own token, so counting is a
rule over digits (raise the units digit, carry into the tens) that it picks up from a few hundred
rows; where to stop is harder. Two-digit sums and differences need carries across digits and the
tiny model learns them slowly: it learns the answer's size before its last digit, and the
multiple-choice distractors are off by one and by ten, so that score stays near chance (0.25).
Measured once on 2 CPU cores (full fine-tune of `tiny` in its chat format, batch 16, Adam at 1e-3,
training rows drawn like these items but leaving out every question here):
- counting, 600 rows, 1200 steps (4 min): workbench_count_gen exact match 0.00 -> 0.22; the counts
  come out right and often run a number or two past the end;
- arithmetic, 1500 rows, 1000 steps (3 min): workbench_arith_mc acc 0.15 -> 0.29, workbench_arith_gen
  exact match 0.00 -> 0.03 (answers land within one or ten of the right number).
A training set for these tasks must leave out every question in these files (`heldout_questions()`).

Zorbish is the pair of tasks on which a short fine-tune of `tiny` does measurably help: a made-up
language the base cannot know ("Translate into Zorbish: red cat" -> "vel miv"), 12 adjectives and 12
nouns each with one Zorbish word. The sample data set `zorbish` (workbench/data/samples) trains on
96 of the 144 pairs; the 48 others are the items here, so every word was seen in training but never
in that pair, and a right answer means the model translates word by word rather than recalling a
row. Multiple choice (workbench_zorbish_mc) scores the right pair against the same pair with the
adjective, the noun, or both swapped for another word's translation (chance 0.25); generation
(workbench_zorbish_gen) asks for the exact two words.
What the tiny model can learn here: a lookup from a word to another word, and to write the two in
order, from a few hundred rows in 100 to 150 steps. What it cannot, in the same time: anything that
hangs on a digit's place (whether 4537 is even or odd, its last digit, repeating a number: all stayed
at chance or 0 after 150 steps of full fine-tuning at 2e-3, measured on draft tasks not shipped).
Measured on 2 CPU cores (AMD EPYC, shared, so job times vary), `tiny` fine-tuned on the zorbish sample
in its chat format, batch 16, Adam with a cosine decay; 48 items per task, base first:
- base: zorbish_mc acc 0.31, zorbish_gen exact match 0.00;
- full fine-tune (sft) at 2e-3, 150 steps (22 to 58 s of job): seed 0 0.94 / 0.50, seed 1 0.88 /
  0.63, seed 2 0.90 / 0.38; 100 steps: 0.90 / 0.23;
- LoRA rank 16 at 3e-3 with lora_alpha 64 (scale 4), 200 steps: seed 0 0.90 / 0.21, seed 1 0.44 /
  0.02, seed 2 0.50 / 0.02 (LoRA on tiny is fragile); seed 0 with 100 steps 0.48 / 0.04, with batch 8
  0.71 / 0.08; seed 1 with scale 8 at 2e-3 0.56 / 0.04; at 5e-3 or 1e-2 the loss diverged; at
  scale 1 (alpha 16) and 5e-3, 150 steps: 0.35 / 0.00 (on a draft split of the same pairs).
The generation misses are mostly one word off, most often the noun.

Deterministic: run `python workbench/evaluation/shipped/make_tasks.py` and commit the .jsonl files.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent.parent / "data" / "samples"
ARITH_ITEMS = 150
COUNT_ITEMS = 120


def sample_questions() -> set[str]:
    """Every user question in the shipped sample data sets, whatever their format."""
    found = set()
    for path in SAMPLES.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            found.add(row.get("instruction", ""))
            for turn in row.get("messages", []) + row.get("conversations", []):
                found.add(turn.get("content") or turn.get("value") or "")
    return found


def arithmetic(rng: random.Random) -> tuple[str, str, int, list[int]]:
    """A question, the answer's words before the number, the number, and three wrong numbers."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        question, stem, right, other = f"What is {a} plus {b}?", f"{a} plus {b} is", a + b, abs(a - b)
    else:
        a, b = max(a, b), min(a, b)
        question, stem, right, other = f"What is {a} minus {b}?", f"{a} minus {b} is", a - b, a + b
    wrong = [n for n in dict.fromkeys([other, right + 1, right - 1, right + 10, right - 10])
             if n >= 0 and n != right]
    return question, stem, right, rng.sample(wrong, 3)


def arith_items(rng: random.Random, taken: set[str]) -> list[tuple[str, str, int, list[int]]]:
    items = []
    while len(items) < ARITH_ITEMS:
        item = arithmetic(rng)
        if item[0] not in taken:
            taken.add(item[0])
            items.append(item)
    return items


def mc_row(item: tuple[str, str, int, list[int]], rng: random.Random) -> dict:
    question, stem, right, wrong = item
    numbers = [right, *wrong]
    rng.shuffle(numbers)
    return {"question": question, "choices": [f"{stem} {n}." for n in numbers],
            "answer": numbers.index(right)}


def count_items(rng: random.Random, taken: set[str]) -> list[dict]:
    items = []
    while len(items) < COUNT_ITEMS:
        start = rng.randint(30, 90)
        stop = start + rng.randint(3, 7)
        question = f"Count from {start} to {stop}."
        if question not in taken:
            taken.add(question)
            items.append({"question": question, "answer": ", ".join(str(i) for i in range(start, stop + 1))})
    return items


def zorbish_items(rng: random.Random, taken: set[str]) -> tuple[list[dict], list[dict]]:
    """The held-out pairs (those the sample leaves out) as multiple-choice and generation items."""
    sys.path.insert(0, str(SAMPLES))  # the sample's own words; make_samples.py is not a module of the package
    from make_samples import ZORBISH_ADJECTIVES as adjectives
    from make_samples import ZORBISH_NOUNS as nouns
    from make_samples import zorbish

    mc, gen = [], []
    for adjective, noun in [(a, n) for a in adjectives for n in nouns]:
        question, answer = zorbish(adjective, noun)
        if question in taken:
            continue
        other_adjective = adjectives[rng.choice([a for a in adjectives if a != adjective])]
        other_noun = nouns[rng.choice([n for n in nouns if n != noun])]
        choices = [answer, f"{other_adjective} {nouns[noun]}", f"{adjectives[adjective]} {other_noun}",
                   f"{other_adjective} {other_noun}"]
        rng.shuffle(choices)
        mc.append({"question": question, "choices": choices, "answer": choices.index(answer)})
        gen.append({"question": question, "answer": answer})
    return mc, gen


def heldout_questions() -> set[str]:
    """The questions of every shipped item (a perplexity item's whole text): what a training set for
    these tasks must not contain."""
    rows = (json.loads(line) for path in HERE.glob("*.jsonl") for line in path.read_text().splitlines())
    return {row["question"] if "question" in row else row["text"] for row in rows}


def write(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    taken = sample_questions()
    rng = random.Random(17)
    write("arith_mc.jsonl", [mc_row(item, rng) for item in arith_items(rng, taken)])
    write("arith_gen.jsonl", [{"question": q, "answer": str(n)} for q, _, n, _ in arith_items(rng, taken)])
    write("count_gen.jsonl", count_items(rng, taken))
    mc, gen = zorbish_items(random.Random(7), sample_questions())
    write("zorbish_mc.jsonl", mc)
    write("zorbish_gen.jsonl", gen)


if __name__ == "__main__":
    main()
