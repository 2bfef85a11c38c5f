"""A small, learnable, deterministic data set in the real SQuAD v2 format.

No package ships SQuAD v2 and our machines cannot reach the hub, so tests and smoke
studies generate data that goes through the same loading code as the real files:
paragraphs of templated facts about invented places ("The capital of
Zorbia is Quellton.", "Zorbia was founded in 1843.") padded with filler
sentences to varied lengths (from a few dozen tokens to well over 384, so long
contexts overflow into several features). About a third of the questions are
unanswerable: they ask for an attribute the paragraph does not state for that
place, sometimes while stating it for another place (a distractor).

Files (JSON Lines are what ``datasets.load_dataset("json", ...)`` reads)::

    squad_v2_train.jsonl         {id, title, context, question, answers{text[], answer_start[]}}
    squad_v2_eval.jsonl          same, evaluation split
    squad_v2_eval_official.json  {"version": "v2.0", "data": [{title, paragraphs: [{context, qas}]}]}

CLI (every task): ``python -m jobs.tasks.generate squad_v2 OUT_DIR --n-train N --n-eval N --seed S``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobs.contract import write_text_atomic
from jobs.tasks.base import write_jsonl

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "v", "z", "br", "dr", "th", "kr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou")
_ENDINGS = ("ia", "and", "ora", "esh", "ar", "on", "ith", "um")
_TOWN_ENDINGS = ("ton", "ford", "holm", "by", "wick", "gard", "mouth")
_EXPORTS = ("copper", "wool", "tea", "salt", "timber", "amber", "silk", "glass", "barley", "tin", "olive oil")
_FIRST_NAMES = ("Mara", "Tobin", "Ilse", "Corvin", "Anwen", "Dario", "Selka", "Joren", "Fenna", "Ulric")

_FILLER_TEMPLATES = (
    "Travellers often remark on the {adj} {noun} of the {place}.",
    "In spring the {place} fills with {adj} {noun} and the roads grow busy.",
    "Local stories describe a {adj} {noun} that once stood near the {place}.",
    "Most visitors arrive by the old road that follows the {place}.",
    "Every autumn a {adj} festival celebrates the {noun} of the {place}.",
    "Historians disagree about how the {noun} near the {place} were first built.",
    "The {place} is known for its {adj} weather and its quiet {noun}.",
    "Few records survive from the years when the {noun} were {adj}.",
    "Children learn early to recognise the {adj} {noun} by the {place}.",
    "A small museum near the {place} keeps maps, letters and a {adj} {noun}.",
)
_FILLER_WORDS = {
    "adj": ("grey", "narrow", "ancient", "windy", "bright", "crowded", "silent", "green", "modest", "famous"),
    "noun": ("bridges", "markets", "orchards", "towers", "harbours", "gardens", "mills", "chapels", "walls"),
    "place": ("valley", "coast", "old quarter", "hills", "river banks", "northern plain", "lake shore"),
}


def _name(rng: random.Random, endings: Sequence[str]) -> str:
    syllables = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 2)))
    return (syllables + rng.choice(endings)).capitalize()


# An attribute: (sentence template with {e} and {v}, question template with {e},
# value generator returning (answer text, [(shorter gold answer, offset inside it)])).
Attribute = tuple[str, str, Callable[[random.Random], tuple[str, list[tuple[str, int]]]]]


def _surname(rng: random.Random) -> tuple[str, list[tuple[str, int]]]:
    first, last = rng.choice(_FIRST_NAMES), _name(rng, ("en", "ard", "ov", "is"))
    return f"{first} {last}", [(last, len(first) + 1)]


def _suffixed(suffix: str, prefix: str = "") -> Callable[[random.Random], tuple[str, list[tuple[str, int]]]]:
    def value(rng: random.Random) -> tuple[str, list[tuple[str, int]]]:
        core = _name(rng, ("el", "or", "is", "an"))
        return f"{prefix}{core}{suffix}", [(core, len(prefix))]

    return value


ATTRIBUTES: dict[str, Attribute] = {
    "capital": ("The capital of {e} is {v}.", "What is the capital of {e}?", lambda r: (_name(r, _TOWN_ENDINGS), [])),
    "founded": ("{e} was founded in {v}.", "In what year was {e} founded?", lambda r: (str(r.randint(1100, 1990)), [])),
    "river": ("The longest river in {e} is the {v}.", "What is the longest river in {e}?", _suffixed(" River")),
    "peak": ("The highest peak in {e} is {v}.", "What is the highest peak in {e}?", _suffixed("", prefix="Mount ")),
    "leader": ("{e} is governed by {v}.", "Who governs {e}?", _surname),
    "export": ("The main export of {e} is {v}.", "What is the main export of {e}?", lambda r: (r.choice(_EXPORTS), [])),
    "population": (
        "{e} has a population of {v} people.",
        "How many people live in {e}?",
        lambda r: (f"{r.randint(2, 990)},{r.randint(0, 999):03d}", []),
    ),
    "language": ("People in {e} mostly speak {v}.", "What language is spoken in {e}?",
                 lambda r: (_name(r, ("ish", "ese", "ic")), [])),
}


def _filler(rng: random.Random) -> str:
    template = rng.choice(_FILLER_TEMPLATES)
    return template.format(**{slot: rng.choice(words) for slot, words in _FILLER_WORDS.items()})


def _filler_count(rng: random.Random) -> int:
    """Mostly short paragraphs, some long enough to overflow 128 and 384 tokens."""
    low, high = rng.choices([(0, 2), (3, 10), (11, 25), (30, 45)], weights=[45, 33, 13, 9])[0]
    return rng.randint(low, high)


def _paragraph(rng: random.Random) -> tuple[str, dict[tuple[str, str], list[dict[str, Any]]], list[str]]:
    """A context and, for each (entity, attribute) it states, its gold answers with offsets."""
    entities = [_name(rng, _ENDINGS)]
    if rng.random() < 0.5:  # a second place: its facts are distractors for questions about the first
        second = _name(rng, _ENDINGS)
        if second != entities[0]:
            entities.append(second)
    facts = [(entities[0], attr) for attr in rng.sample(sorted(ATTRIBUTES), rng.randint(3, 6))]
    facts += [(entities[-1], attr) for attr in rng.sample(sorted(ATTRIBUTES), 2) if len(entities) > 1]
    sentences: list[Any] = [_filler(rng) for _ in range(_filler_count(rng))]
    for fact in facts:
        sentences.insert(rng.randint(0, len(sentences)), fact)
    context, answers = "", {}
    for item in sentences:
        if context:
            context += " "
        if isinstance(item, str):
            context += item
            continue
        entity, attr = item
        template, _, make_value = ATTRIBUTES[attr]
        value, shorter = make_value(rng)
        before, after = template.split("{v}")
        start = len(context) + len(before.format(e=entity))
        answers[item] = [{"text": value, "answer_start": start}] + [
            {"text": text, "answer_start": start + offset} for text, offset in shorter
        ]
        context += before.format(e=entity) + value + after.format(e=entity)
    return context, answers, entities


def _questions(rng: random.Random, answers: dict[tuple[str, str], list[dict[str, Any]]], entity: str,
               count: int, with_alternatives: bool) -> list[tuple[str, list[dict[str, Any]]]]:
    """``count`` questions about ``entity``; each unanswerable with probability 1/3."""
    stated = [attr for (name, attr) in answers if name == entity]
    missing = [attr for attr in sorted(ATTRIBUTES) if attr not in stated]
    result: list[tuple[str, list[dict[str, Any]]]] = []
    for attr in rng.sample(stated, min(count, len(stated))):
        if missing and rng.random() < 1 / 3:
            attr = missing.pop(rng.randrange(len(missing)))
            result.append((ATTRIBUTES[attr][1].format(e=entity), []))
        else:
            gold = answers[(entity, attr)]
            result.append((ATTRIBUTES[attr][1].format(e=entity), gold if with_alternatives else gold[:1]))
    return result


def generate_squad_v2(n_examples: int, seed: int, split: str = "train") -> list[dict[str, Any]]:
    """``n_examples`` flat SQuAD v2 examples (1 to 3 questions a paragraph).

    Deterministic in (seed, split); evaluation splits (``split != "train"``) carry
    a shorter second gold answer where one exists ("Velor River" / "Velor"), as the
    real dev set has several gold answers a question.
    """
    rng = random.Random(f"squad_v2:{seed}:{split}")
    examples: list[dict[str, Any]] = []
    while len(examples) < n_examples:
        context, answers, entities = _paragraph(rng)
        for question, gold in _questions(rng, answers, entities[0], rng.randint(1, 3), split != "train"):
            examples.append({
                "id": f"{split}-{seed}-{len(examples):06d}",
                "title": entities[0],
                "context": context,
                "question": question,
                "answers": {"text": [a["text"] for a in gold], "answer_start": [a["answer_start"] for a in gold]},
            })
    return examples[:n_examples]


def to_official(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Flat examples -> the official nested v2.0 layout (one paragraph a distinct context)."""
    articles: list[dict[str, Any]] = []
    for example in examples:
        if not articles or articles[-1]["paragraphs"][-1]["context"] != example["context"]:
            articles.append({"title": example["title"], "paragraphs": [{"context": example["context"], "qas": []}]})
        answers = example["answers"]
        articles[-1]["paragraphs"][-1]["qas"].append({
            "id": example["id"],
            "question": example["question"],
            "answers": [{"text": t, "answer_start": s} for t, s in zip(answers["text"], answers["answer_start"])],
            "is_impossible": not answers["text"],
        })
    return {"version": "v2.0", "data": articles}


def _fitting(n: int, seed: int, split: str, max_context_words: int | None) -> list[dict[str, Any]]:
    """``n`` examples, only those whose context has at most ``max_context_words`` words."""
    if max_context_words is None:
        return generate_squad_v2(n, seed, split=split)
    factor = 2
    while True:
        pool = generate_squad_v2(factor * n, seed, split=split)
        kept = [e for e in pool if len(e["context"].split()) <= max_context_words]
        if len(kept) >= n or factor >= 64:
            if len(kept) < n:
                raise ValueError(f"data.synthetic.max_context_words {max_context_words} is too small: "
                                 f"only {len(kept)} of {factor * n} generated contexts fit")
            return kept[:n]
        factor *= 2


def write_squad_v2(path_dir: Path | str, n_train: int, n_eval: int, seed: int,
                   max_context_words: int | None = None) -> tuple[Path, Path, Path]:
    """Write the train and eval splits (flat JSON Lines) and the eval split in the official
    nested format; return (train_path, eval_path, eval_official_path)."""
    out = Path(path_dir)
    evaluation = _fitting(n_eval, seed, "eval", max_context_words)
    official = out / "squad_v2_eval_official.json"
    write_text_atomic(official, json.dumps(to_official(evaluation), ensure_ascii=False) + "\n")
    return (
        write_jsonl(out / "squad_v2_train.jsonl", _fitting(n_train, seed, "train", max_context_words)),
        write_jsonl(out / "squad_v2_eval.jsonl", evaluation),
        official,
    )
