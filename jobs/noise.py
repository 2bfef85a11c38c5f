"""``data.noise``: a seeded corruption of the text, for robustness studies.

Kinds (``rate`` is a probability per character or per word, each decided independently):

* ``char_substitution``: each letter becomes another random letter (case kept);
* ``char_deletion``: each non-space character is dropped;
* ``word_deletion``: each word is dropped with the space after it (a text may lose every word);
* ``word_swap``: walking left to right, each word changes place with the next one (a swapped
  pair is not swapped again);
* ``emoji_insertion``: after each word an emoji from EMOJIS is inserted (with a space).

Words are runs of non-space characters; the whitespace between them is kept as it was, so
rate 0 returns every text unchanged. Each example's corruption is drawn from its own
generator, seeded with (seed, split, row index): the same seed gives the same corrupted
data in every run and whatever rows a subset kept. The seed is ``noise.seed``, else the
run's ``seed``.

Which text: the caller passes the task's ``noise_column`` (``jobs.tasks``): SST-2's ``sentence``; SQuAD v2's
``question`` only (its context is never touched: the answers are character spans in it).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from jobs.contract import NOISE_SAMPLE_SIZE, NoiseConfig

EMOJIS = ("😀", "😂", "😍", "😢", "😡", "👍", "👎", "🔥", "🎉", "🙄", "💯", "🤔")
_TOKENS = re.compile(r"\S+|\s+")


def _substitute(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for char in text:
        if char.isalpha() and rng.random() < rate:
            letter = rng.choice([c for c in string.ascii_lowercase if c != char.lower()])
            char = letter.upper() if char.isupper() else letter
        out.append(char)
    return "".join(out)


def _delete_chars(text: str, rate: float, rng: random.Random) -> str:
    return "".join(char for char in text if char.isspace() or rng.random() >= rate)


def _words(text: str) -> list[tuple[str, str]]:
    """(word, whitespace after it) pairs, and a leading ("", whitespace) when the text starts with space."""
    tokens = _TOKENS.findall(text)
    pairs: list[tuple[str, str]] = []
    for token in tokens:
        if token.isspace():
            if pairs:
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + token)
            else:
                pairs.append(("", token))
        else:
            pairs.append((token, ""))
    return pairs


def _delete_words(text: str, rate: float, rng: random.Random) -> str:
    return "".join(word + space for word, space in _words(text) if not word or rng.random() >= rate)


def _swap_words(text: str, rate: float, rng: random.Random) -> str:
    pairs = _words(text)
    words = [word for word, _ in pairs]
    index = 0
    while index < len(words) - 1:
        if words[index] and words[index + 1] and rng.random() < rate:
            words[index], words[index + 1] = words[index + 1], words[index]
            index += 2
        else:
            index += 1
    return "".join(word + space for word, (_, space) in zip(words, pairs))


def _insert_emoji(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for word, space in _words(text):
        out.append(word)
        if word and rng.random() < rate:
            out.append(" " + rng.choice(EMOJIS))
        out.append(space)
    return "".join(out)


CORRUPTIONS: dict[str, Callable[[str, float, random.Random], str]] = {
    "char_substitution": _substitute,
    "char_deletion": _delete_chars,
    "word_deletion": _delete_words,
    "word_swap": _swap_words,
    "emoji_insertion": _insert_emoji,
}


def corrupt(text: str, kind: str, rate: float, seed: int, split: str, index: int) -> str:
    """``text`` corrupted by ``kind`` at ``rate``, reproducibly for (seed, split, index)."""
    if rate == 0:
        return text
    return CORRUPTIONS[kind](text, rate, random.Random(f"noise:{seed}:{split}:{index}"))


def noise_seed(noise: NoiseConfig, run_seed: int) -> int:
    return noise.seed if noise.seed is not None else run_seed


def identity(noise: NoiseConfig, run_seed: int, split: str) -> str | None:
    """What the features of ``split`` depend on (part of the cache key), None when it is clean."""
    if split not in noise.apply_to:
        return None
    return f"noise(kind={noise.kind},rate={noise.rate!r},seed={noise_seed(noise, run_seed)})"


def corrupt_split(dataset: Any, column: str, noise: NoiseConfig, run_seed: int, split: str,
                  row_indices: Sequence[int] | None = None) -> tuple[Any, dict[str, Any]]:
    """``dataset`` (a ``datasets.Dataset``) with its text column corrupted, and a report:
    {column, examples, changed, sample: [{split, index, original, corrupted}] (changed rows first,
    at most NOISE_SAMPLE_SIZE, in row order)}.

    ``row_indices``: each row's position in the full split (a subset's rows), so that a row is
    corrupted the same way whatever subset it is in; default its position in ``dataset``.
    ``column``: the text column to corrupt (the task's ``noise_column``)."""
    seed = noise_seed(noise, run_seed)
    originals = list(dataset[column])
    rows = list(row_indices) if row_indices is not None else list(range(len(originals)))
    corrupted = [corrupt(text, noise.kind, noise.rate, seed, split, row) for row, text in zip(rows, originals)]
    changed = [position for position, (a, b) in enumerate(zip(originals, corrupted)) if a != b]
    unchanged = [position for position, (a, b) in enumerate(zip(originals, corrupted)) if a == b]
    shown = sorted((changed + unchanged)[:NOISE_SAMPLE_SIZE])
    report = {
        "column": column, "examples": len(originals), "changed": len(changed),
        "sample": [{"split": split, "index": rows[p], "original": originals[p], "corrupted": corrupted[p]}
                   for p in shown],
    }
    return dataset.remove_columns(column).add_column(column, corrupted), report
