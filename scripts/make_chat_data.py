"""Build the committed chat example data sets (run once; the output is committed).

    python scripts/make_chat_data.py            # writes examples/data/{chatbot,orders}/

Two sets, both in TRL's conversational form, one JSON object per line:
    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]}

* chatbot: the English part of PyPI `chatterbot-corpus` (BSD). Real small talk, for smoke tests
  and for showing loss masking on multi-turn rows. There is no exact answer to score.
* orders: a synthetic extraction task of our own ("turn this message into a fixed JSON line").
  It exists because it is the opposite: the base SmolLM2-135M-Instruct gets almost none of it
  right zero-shot, the answers are short and fully determined by the input, so exact match is a
  meaningful metric and a LoRA run shows a clear before / after gap.

Both outputs are deterministic for a given seed, so re-running the script reproduces the files
byte for byte.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples" / "data"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One compact JSON object per line; UTF-8 kept readable (no \\u escapes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# chatterbot corpus
# --------------------------------------------------------------------------------------------


@dataclass
class CorpusStats:
    """What happened to every source conversation, so the provenance note can account for it."""

    files: int = 0
    conversations: int = 0
    kept: int = 0
    utterances_kept: int = 0
    skipped_not_a_list: int = 0
    skipped_bad_utterance: int = 0  # empty or non-string utterances seen
    truncated_at_bad_utterance: int = 0
    dropped_trailing_user: int = 0
    skipped_too_short: int = 0
    skipped_duplicate: int = 0
    multi_turn: int = 0
    notes: list[str] = field(default_factory=list)


def chatterbot_dir() -> Path:
    """The installed corpus' English folder (found without importing the package's code)."""
    import importlib.util

    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the corpus: pip install --no-deps chatterbot-corpus==1.3.3")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "english"


def conversation_to_messages(utterances: list, stats: CorpusStats) -> list[dict] | None:
    """Turn a chatterbot conversation into alternating user / assistant messages.

    Chatterbot stores a conversation as a list of utterances where each one answers the one
    before. We read it as a dialogue that starts with the user and alternates, so a list of N
    utterances gives N // 2 exchanges and keeps multi-turn conversations multi-turn. A trailing
    odd utterance would be a user turn with no reply (nothing to learn from), so it is dropped.
    An empty or non-string utterance would break the alternation, so the conversation is cut
    just before it. Text is only stripped at the ends: coding.yml answers hold code blocks whose
    line breaks matter.
    """
    clean: list[str] = []
    for utterance in utterances:
        if not isinstance(utterance, str) or not utterance.strip():
            stats.skipped_bad_utterance += 1
            stats.truncated_at_bad_utterance += 1
            break
        clean.append(utterance.strip())
    if len(clean) % 2:
        clean.pop()
        stats.dropped_trailing_user += 1
    if len(clean) < 2:
        stats.skipped_too_short += 1
        return None
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": text} for i, text in enumerate(clean)]


def load_chatterbot(stats: CorpusStats) -> list[tuple[str, list[dict]]]:
    """(topic, messages) for every usable English conversation, in file order.

    Exact duplicate conversations are kept once: tech_support.yml repeats 10 conversations about
    100 times each and coding.yml repeats about half of its own, which would otherwise make up
    more than half of the data and leak the same rows into both splits.
    """
    out = []
    seen: set[str] = set()
    for path in sorted(chatterbot_dir().glob("*.yml")):
        stats.files += 1
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for index, conversation in enumerate(doc.get("conversations") or []):
            stats.conversations += 1
            if not isinstance(conversation, list):
                # e.g. trivia.yml #13: a missing "- " made question and answer one string.
                stats.skipped_not_a_list += 1
                stats.notes.append(f"{path.name} conversation {index}: not a list, skipped")
                continue
            messages = conversation_to_messages(conversation, stats)
            if messages is None:
                continue
            key = json.dumps(messages)
            if key in seen:
                stats.skipped_duplicate += 1
                continue
            seen.add(key)
            stats.kept += 1
            stats.utterances_kept += len(messages)
            stats.multi_turn += len(messages) > 2
            out.append((path.stem, messages))
    return out


def split_by_first_prompt(
    rows: list[tuple[str, list[dict]]], test_fraction: float, seed: int
) -> tuple[list, list]:
    """Seeded split by conversation, keeping conversations that open with the same question
    together: the corpus often answers one question several ways ("What is AI?" x 5), and a
    question seen in training would make the test set partly a memory test."""
    groups: dict[str, list] = {}
    for row in rows:
        key = re.sub(r"\W+", " ", row[1][0]["content"].lower()).strip()
        groups.setdefault(key, []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    target = round(test_fraction * len(rows))
    test, train = [], []
    for key in keys:
        (test if len(test) < target else train).extend(groups[key])
    return train, test


def make_chatbot(seed: int) -> dict:
    stats = CorpusStats()
    rows = load_chatterbot(stats)
    train, test = split_by_first_prompt(rows, 0.1, seed)
    out = OUT / "chatbot"
    write_jsonl(out / "train.jsonl", [{"messages": m} for _, m in train])
    write_jsonl(out / "test.jsonl", [{"messages": m} for _, m in test])
    version = importlib.metadata.version("chatterbot-corpus")
    skipped = stats.skipped_not_a_list + stats.skipped_too_short + stats.skipped_duplicate
    (out / "PROVENANCE.md").write_text(
        f"""# chatbot: English small talk from chatterbot-corpus

Source: PyPI `chatterbot-corpus=={version}` (https://github.com/gunthercox/chatterbot-corpus),
files `chatterbot_corpus/data/english/*.yml` ({stats.files} topic files). License: BSD (3-clause;
the package's classifier is "License :: OSI Approved :: BSD License", full text in the
repository's LICENSE file); copyright Gunther Cox and contributors, user-contributed content.

Produced by `scripts/make_chat_data.py` (seed {seed}); do not edit by hand.

## How conversations were converted
- Each source conversation (a list of utterances, each answering the previous) becomes one row
  `{{"messages": [...]}}` whose turns alternate user, assistant, user, ... starting with the user.
  A conversation of N utterances gives N // 2 exchanges; multi-turn conversations stay
  multi-turn. A trailing odd utterance (a user turn with no reply) is dropped.
- Utterances are stripped at both ends only (code blocks keep their line breaks); empty or
  non-string utterances cut the conversation just before them.
- Exact duplicate conversations are kept once (tech_support.yml repeats 10 conversations about
  100 times each; coding.yml repeats about half of its own).
- Split: seeded 90/10 by conversation; conversations opening with the same question (after
  lower-casing and dropping punctuation) stay on the same side, so no test question is seen in
  training.

## Counts
- source conversations: {stats.conversations} (the corpus' "2,393 prompt -> response pairs" counts
  every consecutive utterance pair, and 87 of them come from one malformed entry, see below)
- kept conversations: {stats.kept} ({stats.multi_turn} multi-turn), {stats.utterances_kept} messages
- skipped conversations: {skipped} ({stats.skipped_duplicate} exact duplicates,
  {stats.skipped_not_a_list} not a list, {stats.skipped_too_short} too short after cleaning)
- empty / non-string utterances: {stats.skipped_bad_utterance}
- trailing user turns dropped: {stats.dropped_trailing_user}
- train: {len(train)} rows, test: {len(test)} rows

Skipped entries: {"; ".join(stats.notes) or "none"}.
"""
    )
    return {
        "train": len(train),
        "test": len(test),
        "kept": stats.kept,
        "multi_turn": stats.multi_turn,
        "skipped": skipped,
        "duplicates": stats.skipped_duplicate,
        "bad_utterances": stats.skipped_bad_utterance,
        "dropped_trailing_user": stats.dropped_trailing_user,
    }


# --------------------------------------------------------------------------------------------
# orders: synthetic extraction task
# --------------------------------------------------------------------------------------------

ORDERS_SYSTEM = (
    "Extract the order from the customer's message. Reply with one line of JSON and nothing "
    'else, exactly in this form: {"item": "<item, singular, lower case>", "qty": <number>, '
    '"city": "<delivery city>"}'
)

# (singular, plural). Held-out items appear only in the test set, so the model must learn the
# rule (copy the item, singularise it) rather than memorise item names.
TRAIN_ITEMS = [
    ("mug", "mugs"), ("blue mug", "blue mugs"), ("notebook", "notebooks"),
    ("desk lamp", "desk lamps"), ("office chair", "office chairs"), ("pencil", "pencils"),
    ("stapler", "staplers"), ("water bottle", "water bottles"), ("backpack", "backpacks"),
    ("umbrella", "umbrellas"), ("kitchen knife", "kitchen knives"), ("cardboard box", "cardboard boxes"),
    ("paintbrush", "paintbrushes"), ("wine glass", "wine glasses"), ("lunch box", "lunch boxes"),
    ("candle", "candles"), ("pillow", "pillows"), ("wool blanket", "wool blankets"),
    ("phone charger", "phone chargers"), ("usb cable", "usb cables"), ("keyboard", "keyboards"),
    ("wireless mouse", "wireless mice"), ("monitor stand", "monitor stands"), ("headset", "headsets"),
    ("coffee grinder", "coffee grinders"), ("teapot", "teapots"), ("frying pan", "frying pans"),
    ("cutting board", "cutting boards"), ("dish towel", "dish towels"), ("bath towel", "bath towels"),
    ("yoga mat", "yoga mats"), ("tennis ball", "tennis balls"), ("bicycle helmet", "bicycle helmets"),
    ("flower pot", "flower pots"), ("garden hose", "garden hoses"), ("watering can", "watering cans"),
    ("tape measure", "tape measures"), ("screwdriver", "screwdrivers"), ("hammer", "hammers"),
    ("light bulb", "light bulbs"), ("extension cord", "extension cords"), ("smoke detector", "smoke detectors"),
    ("picture frame", "picture frames"), ("wall clock", "wall clocks"), ("bookshelf", "bookshelves"),
    ("rain jacket", "rain jackets"), ("wool scarf", "wool scarves"), ("leather wallet", "leather wallets"),
    ("sun hat", "sun hats"), ("travel adapter", "travel adapters"), ("red pen", "red pens"),
    ("sketchbook", "sketchbooks"), ("glue stick", "glue sticks"), ("paper clip", "paper clips"),
    ("file folder", "file folders"), ("whiteboard marker", "whiteboard markers"),
    ("baking tray", "baking trays"), ("salad bowl", "salad bowls"), ("soup spoon", "soup spoons"),
    ("toothbrush", "toothbrushes"),
]  # fmt: skip
TEST_ITEMS = [
    ("green teacup", "green teacups"), ("standing desk", "standing desks"), ("camping stove", "camping stoves"),
    ("butter knife", "butter knives"), ("shoe box", "shoe boxes"), ("power bank", "power banks"),
    ("laptop sleeve", "laptop sleeves"), ("flashlight", "flashlights"), ("doormat", "doormats"),
    ("silk tie", "silk ties"), ("ice tray", "ice trays"), ("bird feeder", "bird feeders"),
    ("measuring cup", "measuring cups"), ("step stool", "step stools"), ("hair dryer", "hair dryers"),
    ("pressure cooker", "pressure cookers"), ("glasses case", "glasses cases"),
    ("dart board", "dart boards"),
]  # fmt: skip
TRAIN_CITIES = [
    "Lyon", "Berlin", "Madrid", "Oslo", "Dublin", "Vienna", "Prague", "Lisbon", "Warsaw",
    "Helsinki", "Toronto", "Chicago", "Boston", "Seattle", "Denver", "Austin", "Phoenix",
    "New York", "Los Angeles", "San Diego", "Mexico City", "Buenos Aires", "Lima", "Bogota",
    "Cairo", "Nairobi", "Lagos", "Cape Town", "Mumbai", "Delhi", "Bangkok", "Hanoi", "Manila",
    "Seoul", "Osaka", "Sydney", "Perth", "Auckland", "Glasgow", "Leeds", "Marseille", "Munich",
    "Hamburg", "Milan", "Naples", "Athens", "Istanbul", "Rotterdam", "Antwerp", "Zurich",
]  # fmt: skip
TEST_CITIES = [
    "Porto", "Krakow", "Bergen", "Seville", "Montreal", "Portland", "Nashville", "Santiago",
    "Quito", "Accra", "Kyoto", "Brisbane", "Wellington", "Edinburgh", "Salt Lake City",
    "Rio de Janeiro",
]  # fmt: skip

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()

# {q} quantity phrase, {items} item phrase (plural unless qty is 1), {city} destination,
# {other} another city that is NOT the destination, {ref} an unrelated number, {name} a sender.
TRAIN_TEMPLATES = [
    "Please send {q} {items} to {city}.",
    "Hi, could you ship {q} {items} to our store in {city}? Thanks!",
    "I'd like to order {q} {items}, delivered to {city}.",
    "We need {q} {items} in {city} by next week.",
    "Order for {city}: {q} {items}.",
    "Can you get {q} {items} over to {city}?",
    "Ship to {city}, please: {q} {items}.",
    "Hello! {name} here. Put me down for {q} {items}, shipping address is in {city}.",
    "Our {other} office is out of stock, so please send {q} {items} to {city} instead.",
    "Re: order #{ref}. Deliver {q} {items} to {city}.",
    "I'm writing from {other}, but the {q} {items} should go to {city}.",
    "Quick one: {q} {items}, destination {city}, invoice number {ref}.",
    "{name} from {other} asked me to order {q} {items} for the team in {city}.",
    "Could we have {q} {items} sent to {city}? Ref {ref}.",
    "Need {q} {items} ASAP. Delivery city: {city}.",
    "Please dispatch {q} {items} to the {city} warehouse, not the one in {other}.",
]
TEST_TEMPLATES = [
    "Good morning, please arrange delivery of {q} {items} to {city}.",
    "Hey, {name} again. {q} {items} for {city} this time (last order #{ref} went to {other}).",
    "The {city} branch is requesting {q} {items}.",
    "Add {q} {items} to my order, shipping to {city}.",
    "Moving from {other} to {city} next month, so please deliver the {q} {items} there.",
]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jade", "Kofi", "Lena"]


def quantity_phrase(qty: int, item: str, rng: random.Random, article_ok: bool) -> str:
    """How people write a count: digits, words, "a"/"an", or "a dozen" / "half a dozen".
    Article forms are left out where the template already has one ("the {q} {items}")."""
    forms = [str(qty)]
    if qty < len(NUMBER_WORDS):
        forms.append(NUMBER_WORDS[qty])
    if article_ok and qty == 1:
        forms.append("an" if item[0] in "aeio" else "a")  # "a usb cable", "an umbrella"
    if article_ok and qty == 12:
        forms.append("a dozen")
    if article_ok and qty == 6:
        forms.append("half a dozen")
    return rng.choice(forms)


def order_example(
    rng: random.Random, items: list, cities: list[str], templates: list[str]
) -> tuple[str, str]:
    """One (message, answer) pair; the answer is a function of the message alone."""
    singular, plural = rng.choice(items)
    city, other = rng.sample(cities, 2)
    qty = rng.choice([1, 1, 2, 3, 4, 5, 6, 6, 8, 10, 12, 12, 15, 20, 24, 25, 30, 40, 50, 100])
    if rng.random() < 0.3:
        qty = rng.randint(2, 60)
    template = rng.choice(templates)
    message = template.format(
        q=quantity_phrase(qty, singular, rng, article_ok="the {q}" not in template),
        items=singular if qty == 1 else plural,
        city=city,
        other=other,
        ref=rng.randint(1000, 99999),
        name=rng.choice(NAMES),
    )
    message = message[0].upper() + message[1:]
    answer = json.dumps({"item": singular, "qty": qty, "city": city})
    return message, answer


def make_orders(seed: int, n_train: int, n_test: int) -> dict:
    rng = random.Random(seed)

    def generate(n: int, items, cities, templates, seen: set[str]) -> list[dict]:
        rows = []
        while len(rows) < n:
            message, answer = order_example(rng, items, cities, templates)
            if message in seen:
                continue
            seen.add(message)
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": ORDERS_SYSTEM},
                        {"role": "user", "content": message},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        return rows

    seen: set[str] = set()
    train = generate(n_train, TRAIN_ITEMS, TRAIN_CITIES, TRAIN_TEMPLATES, seen)
    # Test: only unseen items and cities; half the rows also use unseen sentence templates.
    test = generate(n_test // 2, TEST_ITEMS, TEST_CITIES, TEST_TEMPLATES, seen)
    test += generate(n_test - n_test // 2, TEST_ITEMS, TEST_CITIES, TRAIN_TEMPLATES, seen)
    rng.shuffle(test)

    out = OUT / "orders"
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    (out / "PROVENANCE.md").write_text(
        f"""# orders: synthetic order extraction (message -> one line of JSON)

Generated by `scripts/make_chat_data.py` (seed {seed}) from templates, item, city and name lists
written for this project; do not edit by hand. License: Apache-2.0 (ours, like the code).

## Task
A system message states the task and the exact output form; the user message is a short
free-text order; the assistant reply is one line, `json.dumps({{"item": ..., "qty": ...,
"city": ...}})` with keys in that order, e.g. `{{"item": "kitchen knife", "qty": 3, "city":
"Lyon"}}`. The answer is fully determined by the message: the item is written singular and lower
case (irregular plurals included: knives, boxes, mice, shelves, scarves), the quantity may be
digits, a word ("seven"), "a"/"an", "a dozen" or "half a dozen", and the city is the delivery
city even when another city or an unrelated number (order #, invoice, ref) is mentioned. Score
with exact match of the whole reply (after stripping surrounding whitespace).

## Split
- train: {len(train)} rows ({len(TRAIN_ITEMS)} items, {len(TRAIN_CITIES)} cities,
  {len(TRAIN_TEMPLATES)} templates)
- test: {len(test)} rows using only held-out items ({len(TEST_ITEMS)}) and cities
  ({len(TEST_CITIES)}); half of them also use held-out sentence templates
  ({len(TEST_TEMPLATES)}). No user message appears twice across the files.
"""
    )
    return {"train": len(train), "test": len(test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--orders-train", type=int, default=1200)
    parser.add_argument("--orders-test", type=int, default=200)
    args = parser.parse_args()
    print("chatbot:", make_chatbot(args.seed))
    print("orders:", make_orders(args.seed, args.orders_train, args.orders_test))


if __name__ == "__main__":
    main()
