"""Learnable generated data in GLUE's formats, one generator a shape, in the style of SST-2's.

* single sentence (CoLA): ``{idx, sentence, label}``; an acceptable sentence (label 1) uses
  correct word forms, an unacceptable one (label 0) at least one wrong form ("goed",
  "childs", "more better"), so the presence of a wrong form decides the label;
* pair (MRPC, QQP, RTE, QNLI, MNLI): ``{idx, <first>, <second>, label}``; a scene (who,
  did what, to what, where) and a second text that restates it ("same"), changes two or
  more of its four parts ("different"), or restates it with "never" ("contradiction", MNLI
  only), so the overlap of the parts (and the "never") decides the relation; each task maps
  the relations onto its own label ids;
* regression (STS-B): ``{idx, sentence1, sentence2, label}``, label = 5 x the share of the
  four parts the two sentences share, plus a little noise, in [0, 5].

Every generator is deterministic in (seed, split) and flips (or for STS-B jitters) a small
share of the labels, so a model cannot reach a perfect score by memorising.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

LABEL_NOISE = 0.05

# --------------------------------------------------------------------------- single sentence

_GOOD = (("went", "goed"), ("ran", "runned"), ("children", "childs"), ("mice", "mouses"),
         ("better", "more better"), ("bought", "buyed"), ("taught", "teached"), ("feet", "foots"))
_OPENERS = ("yesterday", "last week", "in the morning", "after the storm", "on sunday", "every year")
_PEOPLE = ("the teacher", "my brother", "our neighbour", "the old man", "a student", "the doctor")
_TAILS = ("to the market", "with great care", "before dinner", "near the river", "without a word")


def generate_single(n: int, seed: int, split: str) -> list[dict[str, Any]]:
    """``n`` CoLA-like rows {idx, sentence, label} (1 acceptable, 0 not), balanced, 5% of labels flipped."""
    rng = random.Random(f"glue-single:{seed}:{split}")
    rows = []
    for idx in range(n):
        acceptable = rng.random() < 0.5
        forms = rng.sample(_GOOD, rng.randint(1, 2))
        words = [good if acceptable else bad for good, bad in forms]
        if not acceptable and len(words) == 2 and rng.random() < 0.5:
            words[1] = forms[1][0]  # one wrong form is enough
        sentence = " ".join([rng.choice(_OPENERS), rng.choice(_PEOPLE), words[0], "and", *words[1:],
                             rng.choice(_TAILS), "."])
        label = int(acceptable) ^ int(rng.random() < LABEL_NOISE)
        rows.append({"idx": idx, "sentence": sentence, "label": label})
    return rows


# --------------------------------------------------------------------------- pairs and regression

_WHO = ("the chef", "a pilot", "the mayor", "my aunt", "the coach", "a farmer", "the singer", "our lawyer")
_DID = (("cooked", "prepared"), ("painted", "decorated"), ("sold", "traded"), ("repaired", "fixed"),
        ("found", "discovered"), ("carried", "moved"), ("cleaned", "washed"), ("bought", "purchased"))
_WHAT = ("the boat", "a red car", "the old piano", "some bread", "the garden fence", "a wooden chair",
         "the blue bicycle", "an antique clock")
_WHERE = ("in the park", "at the harbour", "near the station", "behind the school", "in the village",
          "at the market", "on the hill", "by the lake")
PARTS = 4  # who, did, what, where


def _scene(rng: random.Random) -> list[int]:
    return [rng.randrange(len(_WHO)), rng.randrange(len(_DID)), rng.randrange(len(_WHAT)), rng.randrange(len(_WHERE))]


def _changed(rng: random.Random, scene: list[int], n_changed: int) -> list[int]:
    other = list(scene)
    sizes = (len(_WHO), len(_DID), len(_WHAT), len(_WHERE))
    for part in rng.sample(range(PARTS), n_changed):
        other[part] = (scene[part] + rng.randrange(1, sizes[part])) % sizes[part]
    return other


def _say(rng: random.Random, scene: list[int], question: bool = False, never: bool = False) -> str:
    """A sentence (or question) telling ``scene``, in one of several phrasings and with either verb synonym."""
    who, did, what, where = _WHO[scene[0]], rng.choice(_DID[scene[1]]), _WHAT[scene[2]], _WHERE[scene[3]]
    if never:
        did = "never " + did
    if question:
        return f"did {who} {'never ' if never else ''}{_DID[scene[1]][0]} {what} {where} ?"
    phrasing = rng.randrange(3)
    if phrasing == 0:
        return f"{who} {did} {what} {where} ."
    if phrasing == 1:
        return f"{where} , {who} {did} {what} ."
    return f"{what} was {did} by {who} {where} ."


RELATIONS = ("same", "different", "contradiction")


def generate_pair(n: int, seed: int, split: str, columns: tuple[str, str], labels: Mapping[str, int],
                  question_first: bool = False) -> list[dict[str, Any]]:
    """``n`` rows {idx, columns[0], columns[1], label}: the relations of ``labels`` (relation -> the task's
    label id) in equal shares, 5% of labels replaced by another relation's. ``question_first``: the first
    text is a question (QQP, QNLI)."""
    relations = [r for r in RELATIONS if r in labels]
    rng = random.Random(f"glue-pair:{seed}:{split}:{','.join(relations)}")
    rows = []
    for idx in range(n):
        relation = rng.choice(relations)
        scene = _scene(rng)
        first = _say(rng, scene, question=question_first)
        if relation == "different":
            second = _say(rng, _changed(rng, scene, rng.randint(2, PARTS)))
        else:
            second = _say(rng, scene, never=relation == "contradiction")
        if rng.random() < LABEL_NOISE:
            relation = rng.choice([r for r in relations if r != relation])
        rows.append({"idx": idx, columns[0]: first, columns[1]: second, "label": labels[relation]})
    return rows


def generate_regression(n: int, seed: int, split: str) -> list[dict[str, Any]]:
    """``n`` STS-B-like rows {idx, sentence1, sentence2, label}: label in [0, 5] = 5 x shared parts / 4,
    jittered by up to 0.25 (0.75 for 5% of rows), rounded to 0.01."""
    rng = random.Random(f"glue-regression:{seed}:{split}")
    rows = []
    for idx in range(n):
        scene = _scene(rng)
        n_changed = rng.randint(0, PARTS)
        jitter = 0.75 if rng.random() < LABEL_NOISE else 0.25
        score = 5.0 * (PARTS - n_changed) / PARTS + rng.uniform(-jitter, jitter)
        rows.append({"idx": idx, "sentence1": _say(rng, scene), "sentence2": _say(rng, _changed(rng, scene, n_changed)),
                     "label": round(min(5.0, max(0.0, score)), 2)})
    return rows
