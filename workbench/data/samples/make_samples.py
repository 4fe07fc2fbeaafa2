"""Writes the sample data sets shipped with the workbench: alpaca.jsonl, sharegpt.jsonl, custom.jsonl,
zorbish.jsonl and preference.jsonl.

The first three are made from templates (arithmetic, capitals, unit conversions, word games, counting,
short definitions and facts about fine-tuning), so a small model's loss falls quickly on them.
zorbish.jsonl teaches a made-up language, two words at a time ("Translate into Zorbish: red cat" ->
"vel miv"): a skill the base model cannot know and the tiny model learns in a short run, so that the
shipped tasks workbench_zorbish_mc and workbench_zorbish_gen can measure a fine-tune on pairs it
never saw (evaluation/shipped/make_tasks.py has the figures). preference.jsonl pairs each templated
question's exact answer (chosen) with an evasive one or the answer to another question (rejected),
for DPO and ORPO. The output is deterministic: run
`python workbench/data/samples/make_samples.py` and commit the .jsonl files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 300

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Portugal": "Lisbon",
    "Austria": "Vienna", "Japan": "Tokyo", "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Peru": "Lima", "Chile": "Santiago", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Poland": "Warsaw", "Greece": "Athens", "Ireland": "Dublin", "Argentina": "Buenos Aires",
    "Mexico": "Mexico City", "India": "New Delhi", "China": "Beijing", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Australia": "Canberra", "New Zealand": "Wellington", "Morocco": "Rabat",
    "Ghana": "Accra", "Denmark": "Copenhagen", "Belgium": "Brussels", "Switzerland": "Bern",
    "Hungary": "Budapest", "Turkey": "Ankara", "South Korea": "Seoul", "Indonesia": "Jakarta",
    "Cuba": "Havana", "Colombia": "Bogota", "Iceland": "Reykjavik", "Nepal": "Kathmandu",
}

# (from unit, to unit, factor)
CONVERSIONS = [
    ("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("kilograms", "grams", 1000),
    ("hours", "minutes", 60), ("minutes", "seconds", 60), ("liters", "milliliters", 1000),
    ("days", "hours", 24), ("weeks", "days", 7), ("centimeters", "millimeters", 10),
]

WORDS = [
    "lantern", "river", "pencil", "garden", "window", "rocket", "marble", "candle", "planet", "silver",
    "forest", "bridge", "orange", "puzzle", "violet", "thunder", "meadow", "harbor", "copper", "falcon",
    "blanket", "mirror", "castle", "pepper", "signal", "tunnel", "basket", "anchor", "jacket", "velvet",
    "compass", "meteor", "saddle", "lemon", "tiger", "cloud", "stone", "apple", "ocean", "music",
]

DEFINITIONS = {
    "harbor": "A harbor is a sheltered stretch of water where ships can stay safely.",
    "lantern": "A lantern is a lamp with a protective case, carried or hung to give light.",
    "compass": "A compass is a tool whose needle points north, used to find directions.",
    "meadow": "A meadow is a field of grass and wild flowers.",
    "anchor": "An anchor is a heavy object dropped from a boat to keep it in place.",
    "glacier": "A glacier is a slow river of ice that forms where snow builds up for years.",
    "orbit": "An orbit is the curved path one body takes around another, like the Moon around the Earth.",
    "recipe": "A recipe is a list of ingredients and steps for making a dish.",
    "volcano": "A volcano is an opening in the ground where molten rock, ash and gas come out.",
    "library": "A library is a place that keeps books and other media for people to borrow or read.",
    "bridge": "A bridge is a structure that carries a road or path across a river, valley or road.",
    "thermometer": "A thermometer is an instrument that measures temperature.",
    "alphabet": "An alphabet is the set of letters used to write a language, in a fixed order.",
    "canyon": "A canyon is a deep, narrow valley with steep sides, often cut by a river.",
    "battery": "A battery stores chemical energy and releases it as electricity.",
    "calendar": "A calendar is a chart of the days, weeks and months of a year.",
}

# Facts about the workbench's own domain: fine-tuning small language models.
FACTS = [
    ("What does LoRA train?",
     "LoRA trains two small matrices added beside each large weight; the original weights stay frozen."),
    ("What is QLoRA?",
     "QLoRA is LoRA on top of a base model stored in four bits, which saves memory."),
    ("What does full fine-tuning change?",
     "Full fine-tuning updates every weight of the model, so it needs the most memory."),
    ("What is a token?",
     "A token is a small piece of text, such as a word or part of a word, that a model reads."),
    ("What does the learning rate control?",
     "The learning rate sets how far each training step moves the weights."),
    ("What happens when the learning rate is too high?",
     "When the learning rate is too high, the loss jumps around or grows instead of falling."),
    ("What is a checkpoint?",
     "A checkpoint saves the weights and training state so a run can continue later."),
    ("What does the validation loss tell you?",
     "The validation loss, measured on held-out rows, tells whether the model generalises."),
    ("Why mask the prompt during fine-tuning?",
     "Masking the prompt makes the model learn only from the answers, not from the questions."),
    ("What is a batch?", "A batch is a group of examples processed together in one training step."),
    ("What is an epoch?", "An epoch is one full pass over the training data."),
    ("What is a chat template?",
     "A chat template turns a list of messages into the exact text format a model was trained on."),
    ("What does max sequence length do?",
     "It limits how many tokens of each example are used; longer examples are truncated."),
    ("What is gradient accumulation?",
     "Gradient accumulation adds up gradients over several small batches before one update."),
    ("What is the LoRA rank?",
     "The LoRA rank is the inner size of the two small matrices; a higher rank adds capacity."),
    ("Why quantize a model?",
     "Quantizing stores weights in fewer bits, so the model uses less memory and often runs faster."),
    ("What is a system message?",
     "A system message gives the model standing instructions for the whole conversation."),
    ("What does the loss measure?",
     "The loss measures how surprised the model is by the correct next tokens; lower is better."),
]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]

SYSTEM_PROMPTS = [
    "You are a concise assistant. Answer in one short sentence.",
    "You are a helpful assistant that gives short, exact answers.",
    "You are a friendly tutor. Keep answers brief.",
]

# Zorbish, a made-up language: each English word has one Zorbish word, and a pair translates word by
# word. ZORBISH_HELD_OUT of the 144 pairs never appear in the sample: they are the shipped tasks' items.
ZORBISH_ADJECTIVES = {
    "red": "vel", "blue": "tam", "green": "sor", "black": "kip", "white": "lun", "small": "dax",
    "big": "mor", "old": "fen", "new": "ral", "happy": "bix", "sad": "wug", "fast": "zem",
}
ZORBISH_NOUNS = {
    "cat": "miv", "dog": "pok", "bird": "sul", "fish": "gar", "tree": "hol", "house": "nib",
    "boat": "dru", "king": "tez", "girl": "yop", "boy": "cav", "star": "jun", "book": "ler",
}
ZORBISH_HELD_OUT = 48

QA = tuple[str, str]


# Question and answer generators -------------------------------------------------------------------


def arithmetic(rng: random.Random) -> QA:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    kind = rng.choice(["plus", "minus", "times"])
    if kind == "plus":
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    if kind == "minus":
        a, b = max(a, b), min(a, b)
        return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"What is {a} times {b}?", f"{a} times {b} is {a * b}."


def capital(rng: random.Random) -> QA:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    if rng.random() < 0.7:
        return f"What is the capital of {country}?", f"The capital of {country} is {city}."
    return f"{city} is the capital of which country?", f"{city} is the capital of {country}."


def conversion(rng: random.Random) -> QA:
    src, dst, factor = rng.choice(CONVERSIONS)
    n = rng.randint(2, 12)
    return f"How many {dst} are in {n} {src}?", f"{n} {src} is {n * factor} {dst}."


def word_task(rng: random.Random) -> QA:
    word = rng.choice(WORDS)
    kind = rng.choice(["reverse", "upper", "length", "first", "last"])
    if kind == "reverse":
        return f"Reverse the word '{word}'.", f"'{word}' reversed is '{word[::-1]}'."
    if kind == "upper":
        return f"Write the word '{word}' in capital letters.", word.upper()
    if kind == "length":
        return f"How many letters are in the word '{word}'?", f"'{word}' has {len(word)} letters."
    if kind == "first":
        return f"What is the first letter of '{word}'?", f"The first letter of '{word}' is '{word[0]}'."
    return f"What is the last letter of '{word}'?", f"The last letter of '{word}' is '{word[-1]}'."


def counting(rng: random.Random) -> QA:
    kind = rng.choice(["range", "next", "parity", "words"])
    if kind == "range":
        start = rng.randint(1, 20)
        stop = start + rng.randint(3, 7)
        numbers = ", ".join(str(i) for i in range(start, stop + 1))
        return f"Count from {start} to {stop}.", f"{numbers}."
    if kind == "next":
        n = rng.randint(1, 98)
        return f"What number comes after {n}?", f"The number after {n} is {n + 1}."
    if kind == "parity":
        n = rng.randint(1, 99)
        return f"Is {n} even or odd?", f"{n} is {'even' if n % 2 == 0 else 'odd'}."
    n = rng.randint(0, len(NUMBER_WORDS) - 1)
    return f"Write the number {n} in words.", f"{n} is written '{NUMBER_WORDS[n]}'."


def definition(rng: random.Random) -> QA:
    word = rng.choice(sorted(DEFINITIONS))
    return rng.choice([f"What is a {word}?", f"Define the word '{word}'."]), DEFINITIONS[word]


def fact(rng: random.Random) -> QA:
    return rng.choice(FACTS)


GENERATORS: list[tuple[Callable[[random.Random], QA], int]] = [
    (arithmetic, 5), (capital, 4), (conversion, 3), (word_task, 4), (counting, 3), (definition, 2), (fact, 2),
]


def question(rng: random.Random) -> QA:
    generators, weights = zip(*GENERATORS)
    return rng.choices(generators, weights=weights)[0](rng)


def unique(make: Callable[[random.Random], object], rng: random.Random, count: int) -> list:
    """`count` distinct rows from `make` (a few repeats are allowed once the templates run dry)."""
    rows, seen, tries = [], set(), 0
    while len(rows) < count:
        row = make(rng)
        key = json.dumps(row, sort_keys=True)
        tries += 1
        if key in seen and tries < count * 20:
            continue
        seen.add(key)
        rows.append(row)
    return rows


# Alpaca: instruction, optional input, output -------------------------------------------------------


def alpaca_row(rng: random.Random) -> dict:
    kind = rng.random()
    if kind < 0.45:  # a plain question, no input
        ask, say = question(rng)
        return {"instruction": ask, "input": "", "output": say}
    if kind < 0.6:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return {"instruction": "Add the two numbers.", "input": f"{a} and {b}",
                "output": f"{a} + {b} = {a + b}"}
    if kind < 0.7:
        word = rng.choice(WORDS)
        return {"instruction": "Reverse the letters of the word.", "input": word, "output": word[::-1]}
    if kind < 0.78:
        words = rng.sample(WORDS, rng.randint(3, 5))
        return {"instruction": "Sort these words alphabetically.", "input": ", ".join(words),
                "output": ", ".join(sorted(words))}
    if kind < 0.86:
        words = rng.sample(WORDS, rng.randint(2, 7))
        return {"instruction": "Count the words in the text.", "input": " ".join(words),
                "output": f"The text has {len(words)} words."}
    if kind < 0.93:
        country = rng.choice(sorted(CAPITALS))
        return {"instruction": "Name the capital city of the country.", "input": country,
                "output": CAPITALS[country]}
    src, dst, factor = rng.choice(CONVERSIONS)
    n = rng.randint(2, 12)
    return {"instruction": f"Convert the amount to {dst}.", "input": f"{n} {src}",
            "output": f"{n * factor} {dst}"}


# ShareGPT and chat: conversations, some with a system prompt, some multi-turn ----------------------


def follow_up(rng: random.Random) -> list[QA]:
    """Two or three turns where later questions refer to earlier answers."""
    if rng.random() < 0.5:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 30)
        return [(f"What is {a} times {b}?", f"{a} times {b} is {a * b}."),
                (f"And that plus {c}?", f"{a * b} plus {c} is {a * b + c}.")]
    word = rng.choice(WORDS)
    turns = [(f"Write the word '{word}' in capital letters.", word.upper()),
             ("Now reverse it.", word.upper()[::-1])]
    if rng.random() < 0.5:
        turns.append(("How many letters does it have?", f"It has {len(word)} letters."))
    return turns


def conversation(rng: random.Random) -> tuple[str | None, list[QA]]:
    system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.3 else None
    shape = rng.random()
    if shape < 0.6:
        turns = [question(rng)]
    elif shape < 0.8:
        turns = [question(rng) for _ in range(rng.randint(2, 3))]
    else:
        turns = follow_up(rng)
    return system, turns


def sharegpt_row(rng: random.Random) -> dict:
    system, turns = conversation(rng)
    conversations = [{"from": "system", "value": system}] if system else []
    for ask, say in turns:
        conversations += [{"from": "human", "value": ask}, {"from": "gpt", "value": say}]
    return {"conversations": conversations}


def chat_row(rng: random.Random) -> dict:
    system, turns = conversation(rng)
    messages = [{"role": "system", "content": system}] if system else []
    for ask, say in turns:
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": say}]
    return {"messages": messages}


# Zorbish: a made-up language, two words at a time -------------------------------------------------


def zorbish(adjective: str, noun: str) -> QA:
    return (f"Translate into Zorbish: {adjective} {noun}",
            f"{ZORBISH_ADJECTIVES[adjective]} {ZORBISH_NOUNS[noun]}")


def zorbish_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pairs to train on, pairs held out): every word is in some training pair, no held-out pair is."""
    pairs = [(a, n) for a in ZORBISH_ADJECTIVES for n in ZORBISH_NOUNS]
    random.Random(7).shuffle(pairs)
    return pairs[ZORBISH_HELD_OUT:], pairs[:ZORBISH_HELD_OUT]


def zorbish_rows(count: int) -> list[dict]:
    """Chat rows cycling over the training pairs (each seen about count / 96 times), shuffled."""
    train, _ = zorbish_pairs()
    rows = []
    for index in range(count):
        ask, say = zorbish(*train[index % len(train)])
        rows.append({"messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": say}]})
    random.Random(4).shuffle(rows)
    return rows


# Preference: the exact answer chosen, an evasive or wrong one rejected -------------------------------

EVASIONS = ["I don't know.", "I would rather not say.", "That is hard to tell.", "Ask someone else.",
            "No idea, sorry."]


def preference_row(rng: random.Random) -> dict:
    ask, say = question(rng)
    if rng.random() < 0.5:
        rejected = rng.choice(EVASIONS)
    else:
        rejected = say
        while rejected == say:  # an answer to another question: fluent, and wrong
            rejected = question(rng)[1]
    return {"prompt": ask, "chosen": say, "rejected": rejected}


def write(name: str, rows: list[dict]) -> Path:
    path = HERE / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def main() -> None:
    files = [("alpaca", alpaca_row, 1), ("sharegpt", sharegpt_row, 2), ("custom", chat_row, 3)]
    for name, make, seed in files:
        path = write(name, unique(make, random.Random(seed), ROWS))
        print(f"wrote {path} ({ROWS} rows)")
    path = write("zorbish", zorbish_rows(ROWS))
    print(f"wrote {path} ({ROWS} rows)")
    path = write("preference", unique(preference_row, random.Random(5), ROWS))
    print(f"wrote {path} ({ROWS} rows)")


if __name__ == "__main__":
    main()
