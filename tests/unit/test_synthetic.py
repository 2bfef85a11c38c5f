"""Generated data sets: real formats, correct offsets, determinism, varied lengths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.tasks.squad_v2.synthetic import ATTRIBUTES, generate_squad_v2, to_official, write_squad_v2
from jobs.tasks.sst2 import generate_sst2, write_sst2

REPO_ROOT = Path(__file__).resolve().parents[2]


def _token_lower_bound(text: str) -> int:
    """Words and punctuation marks: a WordPiece tokenizer makes at least one token of each."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return generate_squad_v2(400, seed=0, split="eval")


def test_every_answer_start_points_at_its_text(examples: list[dict]) -> None:
    for example in examples:
        answers = example["answers"]
        assert len(answers["text"]) == len(answers["answer_start"])
        for text, start in zip(answers["text"], answers["answer_start"]):
            assert text and example["context"][start:start + len(text)] == text


def test_about_a_third_unanswerable(examples: list[dict]) -> None:
    unanswerable = sum(not example["answers"]["text"] for example in examples) / len(examples)
    assert 0.2 < unanswerable < 0.45


def _attribute_of(question: str) -> tuple[str, str]:
    """(sentence template, entity) of a generated question."""
    for template, question_template, _ in ATTRIBUTES.values():
        match = re.fullmatch(re.escape(question_template).replace(re.escape("{e}"), r"(\w+)"), question)
        if match:
            return template, match.group(1)
    raise AssertionError(f"not a generated question: {question!r}")


def test_questions_match_what_the_context_states(examples: list[dict]) -> None:
    for example in examples:
        template, entity = _attribute_of(example["question"])
        statement = template.split("{v}")[0].format(e=entity)  # "The capital of Zorbia is "
        if example["answers"]["text"]:
            start = example["answers"]["answer_start"][0]
            assert example["context"][start - len(statement):start] == statement
        else:  # unanswerable: the context never states this attribute of this place
            assert statement not in example["context"]


def test_deterministic_by_seed_and_split() -> None:
    assert generate_squad_v2(50, seed=3) == generate_squad_v2(50, seed=3)
    assert generate_squad_v2(50, seed=3) != generate_squad_v2(50, seed=4)
    assert generate_squad_v2(50, seed=3, split="train") != generate_squad_v2(50, seed=3, split="eval")
    assert generate_sst2(50, seed=3) == generate_sst2(50, seed=3) != generate_sst2(50, seed=4)


def test_ids_unique_and_count_exact(examples: list[dict]) -> None:
    assert len(examples) == 400
    assert len({example["id"] for example in examples}) == 400


def test_context_lengths_vary_past_128_and_384_tokens(examples: list[dict]) -> None:
    lengths = [_token_lower_bound(example["context"]) for example in examples]
    assert min(lengths) < 64
    assert sum(length > 128 for length in lengths) >= 20
    assert sum(length > 384 for length in lengths) >= 5


def test_answers_appear_late_in_long_contexts(examples: list[dict]) -> None:
    # Overflowing features only test something if some answers lie past the first window.
    late = [e for e in examples
            if e["answers"]["text"] and _token_lower_bound(e["context"][:e["answers"]["answer_start"][0]]) > 128]
    assert len(late) >= 5


def test_eval_split_has_alternative_gold_answers_train_split_one(examples: list[dict]) -> None:
    assert any(len(example["answers"]["text"]) > 1 for example in examples)
    assert all(len(example["answers"]["text"]) <= 1 for example in generate_squad_v2(200, seed=0, split="train"))


def test_official_layout_round_trip(examples: list[dict]) -> None:
    official = to_official(examples)
    assert official["version"] == "v2.0"
    qas = [qa for article in official["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    assert [qa["id"] for qa in qas] == [example["id"] for example in examples]
    for qa, example in zip(qas, examples):
        assert qa["is_impossible"] == (not example["answers"]["text"])
        assert [a["text"] for a in qa["answers"]] == example["answers"]["text"]
        assert set(qa) == {"id", "question", "answers", "is_impossible"}


def test_write_squad_v2_files(tmp_path: Path) -> None:
    train, evaluation, official = write_squad_v2(tmp_path, n_train=30, n_eval=10, seed=1)
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert len(rows) == 30 and set(rows[0]) == {"id", "title", "context", "question", "answers"}
    assert len(evaluation.read_text().splitlines()) == 10
    assert json.loads(official.read_text())["version"] == "v2.0"


def test_sst2_is_balanced_learnable_and_varied() -> None:
    rows = generate_sst2(600, seed=0)
    assert set(rows[0]) == {"idx", "sentence", "label"}
    positives = sum(row["label"] for row in rows) / len(rows)
    assert 0.4 < positives < 0.6
    # A bag-of-words rule on the generator's own lists gets nearly all of them: learnable.
    from jobs.tasks.sst2 import _NEGATIVE, _POSITIVE

    def rule(sentence: str) -> int:
        words = sentence.split()
        return int(sum(w in _POSITIVE for w in words) > sum(w in _NEGATIVE for w in words))

    agreement = sum(rule(row["sentence"]) == row["label"] for row in rows) / len(rows)
    assert 0.8 < agreement < 1.0  # the noise keeps it below 100%
    lengths = [len(row["sentence"].split()) for row in rows]
    assert max(lengths) >= 3 * min(lengths)


def test_write_sst2_and_cli(tmp_path: Path) -> None:
    train, evaluation = write_sst2(tmp_path / "api", n_train=20, n_eval=5, seed=0)
    assert len(train.read_text().splitlines()) == 20 and len(evaluation.read_text().splitlines()) == 5
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "jobs.tasks.generate", "squad_v2", str(tmp_path / "cli"), "--n-train", "12",
                           "--n-eval", "4", "--seed", "2"], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    paths = [Path(path) for path in json.loads(done.stdout)]
    expected = ["squad_v2_train.jsonl", "squad_v2_eval.jsonl", "squad_v2_eval_official.json"]
    assert [path.name for path in paths] == expected
    assert len(paths[0].read_text().splitlines()) == 12


def test_max_context_words_keeps_only_short_contexts(tmp_path) -> None:
    import json

    from jobs.tasks.squad_v2.synthetic import write_squad_v2

    train_path, eval_path, _ = write_squad_v2(tmp_path, 50, 20, seed=3, max_context_words=60)
    for path, count in ((train_path, 50), (eval_path, 20)):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == count
        assert all(len(r["context"].split()) <= 60 for r in rows)
        for row in rows:  # answers still point at their text
            for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
                assert row["context"][start:start + len(text)] == text
