"""The project's SQuAD v2.0 scorer, against values worked out by hand."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.tasks.squad_v2.metric import compute_exact, compute_f1, evaluate_with_library, normalize_answer, score

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_normalisation_lowercases_and_drops_punctuation_articles_and_extra_whitespace() -> None:
    assert normalize_answer("The Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("  Velor   River. ") == "velor river"
    # "a"/"an"/"the" only as whole words: "theatre" and "Anna" keep their letters.
    assert normalize_answer("the theatre of Anna") == "theatre of anna"


def test_exact_match_after_normalisation() -> None:
    assert compute_exact("the Velor River", "Velor river.") == 1
    assert compute_exact("Velor River", "Velor") == 0


def test_f1_partial_overlap() -> None:
    # gold {velor, river}, prediction {velor}: overlap 1, precision 1/1, recall 1/2,
    # F1 = 2 * 1 * 0.5 / 1.5 = 2/3 ("the" is an article, dropped).
    assert compute_f1("Velor River", "the Velor") == pytest.approx(2 / 3)
    # gold {mara, tolven, of, quaeum}, prediction {tolven, of, braeford}: overlap 2,
    # precision 2/3, recall 2/4, F1 = 2 * (2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7.
    assert compute_f1("Mara Tolven of Quaeum", "Tolven of Braeford") == pytest.approx(4 / 7)
    # Counts are clipped: gold {x:1, y:2}, prediction {y:3, z:1}: overlap min(2, 3) = 2,
    # precision 2/4, recall 2/3, F1 = 2 * 0.5 * (2/3) / (0.5 + 2/3) = 4/7.
    assert compute_f1("x y y", "y y y z") == pytest.approx(4 / 7)
    assert compute_f1("Quellton", "Braeford") == 0.0


def test_empty_gold_matches_only_an_empty_prediction() -> None:
    assert compute_exact("", "") == 1 and compute_f1("", "") == 1.0
    assert compute_exact("", "Quellton") == 0 and compute_f1("", "Quellton") == 0.0
    # A prediction that normalises to nothing ("The.") is an empty prediction.
    assert compute_f1("", "The.") == 1.0


def _flat(qid: str, *texts: str) -> dict:
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def test_multiple_gold_answers_take_the_maximum() -> None:
    data = [_flat("q", "Velor River", "Velor")]
    # "river" vs "Velor River": precision 1, recall 1/2 -> F1 2/3; vs "Velor": 0. EM 0 with both.
    assert score(data, {"q": "river"})["f1"] == pytest.approx(100 * 2 / 3)
    assert score(data, {"q": "river"})["exact"] == 0.0
    # "the Velor" normalises to "velor": exact with the second gold answer.
    assert score(data, {"q": "the Velor"})["exact"] == 100.0


def test_unanswerable_questions_with_empty_and_non_empty_predictions() -> None:
    data = [_flat("yes", "Quellton"), _flat("no1"), _flat("no2")]
    metrics = score(data, {"yes": "Quellton", "no1": "", "no2": "1843"})
    # HasAns: 1/1. NoAns: "" matches (1), "1843" does not (0) -> 50%. All: 2/3.
    assert metrics["HasAns_exact"] == 100.0 and metrics["HasAns_total"] == 1
    assert metrics["NoAns_exact"] == 50.0 and metrics["NoAns_f1"] == 50.0 and metrics["NoAns_total"] == 2
    assert metrics["exact"] == pytest.approx(100 * 2 / 3) and metrics["total"] == 3


FOUR_QUESTIONS = [_flat("q1", "Quellton"), _flat("q2", "Velor River"), _flat("q3"), _flat("q4")]
FOUR_PREDICTIONS = {"q1": "Quellton", "q2": "Velor", "q3": "1843", "q4": "Mount Ardel"}
FOUR_NA_PROBS = {"q1": 0.1, "q2": 0.6, "q3": 0.7, "q4": 0.8}


def test_four_questions_official_keys_and_values_without_threshold() -> None:
    metrics = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS)
    assert list(metrics) == [
        "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
        "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]
    # Raw per question: q1 EM 1 F1 1; q2 EM 0 F1 2/3 ({velor} vs {velor, river});
    # q3 and q4 are unanswerable with text predicted: 0 and 0. Threshold 1.0 changes nothing.
    assert metrics["exact"] == pytest.approx(100 * 1 / 4)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)
    assert metrics["HasAns_exact"] == 50.0 and metrics["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert metrics["NoAns_exact"] == 0.0 and metrics["total"] == 4


def test_four_questions_best_thresholds() -> None:
    metrics = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS)
    # Sweep: all predicted empty -> the 2 unanswerable score: 2.
    # Admit by na_prob: q1 (0.1) F1 +1 -> 3; q2 (0.6) +2/3 -> 3.667 (best F1, thresh 0.6);
    # q3 (0.7) text for a no-answer -> 2.667; q4 (0.8) -> 1.667.
    # best_f1 = 3.667 / 4 = 91.667 at 0.6.
    assert metrics["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert metrics["best_f1_thresh"] == 0.6
    # Exact: q1 -> 3 (thresh 0.1); q2 adds 0 (3, not better); q3 -> 2; q4 -> 1.
    assert metrics["best_exact"] == 75.0
    assert metrics["best_exact_thresh"] == 0.1


def test_four_questions_with_a_no_answer_threshold() -> None:
    # Above 0.6 (strictly): q3 (0.7) and q4 (0.8) count as predicted empty; both are
    # unanswerable, so both score 1. q2 (0.6) keeps its text.
    metrics = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS, na_prob_thresh=0.6)
    assert metrics["exact"] == 75.0  # (1 + 0 + 1 + 1) / 4
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 1) / 4)  # = best_f1 at its threshold
    assert metrics["NoAns_exact"] == 100.0
    # Threshold 0.5: q2 (answerable) also counts as empty and loses its 2/3.
    metrics = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS, na_prob_thresh=0.5)
    assert metrics["f1"] == 75.0 and metrics["HasAns_f1"] == 50.0


def test_official_nested_format_scores_like_flat_examples() -> None:
    nested = {"version": "v2.0", "data": [{"title": "Zorbia", "paragraphs": [{"context": "...", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "Quellton", "answer_start": 0}], "is_impossible": False},
        {"id": "q2", "question": "?", "answers": [{"text": "Velor River", "answer_start": 0}], "is_impossible": False},
        {"id": "q3", "question": "?", "answers": [], "is_impossible": True},
        {"id": "q4", "question": "?", "answers": [], "is_impossible": True},
    ]}]}]}
    flat = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS)
    assert score(nested, FOUR_PREDICTIONS, FOUR_NA_PROBS) == flat
    assert score(nested["data"], FOUR_PREDICTIONS, FOUR_NA_PROBS) == flat


def test_only_answerable_questions_have_no_noans_keys_and_missing_predictions_score_zero() -> None:
    metrics = score([_flat("a", "Quellton"), _flat("b", "1843")], {"a": "Quellton"})
    assert "NoAns_total" not in metrics and "NoAns_exact" not in metrics
    assert metrics["total"] == 2 and metrics["exact"] == 50.0
    # Without na_probs every probability is 0.0: the sweep ends at threshold 0.0.
    assert metrics["best_exact"] == 50.0 and metrics["best_exact_thresh"] == 0.0


def test_library_unavailable_falls_back_to_ours() -> None:
    def unavailable() -> None:
        raise FileNotFoundError("Couldn't find a module script")

    ours = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS)
    assert evaluate_with_library(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS, load_metric=unavailable) == ours


def test_library_disagreement_is_logged_and_ours_returned(caplog: pytest.LogCaptureFixture) -> None:
    ours = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS)

    class Metric:
        def __init__(self, result: dict) -> None:
            self.result, self.calls = result, []

        def compute(self, **kwargs: object) -> dict:
            self.calls.append(kwargs)
            return self.result

    agreeing = Metric(dict(ours))
    with caplog.at_level(logging.WARNING):
        checked = evaluate_with_library(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS, load_metric=lambda: agreeing)
    assert checked == ours
    assert not caplog.records
    sent = agreeing.calls[0]
    assert {"id": "q3", "prediction_text": "1843", "no_answer_probability": 0.7} in sent["predictions"]
    assert {"id": "q3", "answers": {"text": [], "answer_start": []}} in sent["references"]
    disagreeing = Metric({**ours, "f1": ours["f1"] + 1})
    checked = evaluate_with_library(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS, load_metric=lambda: disagreeing)
    assert checked == ours
    assert "disagrees" in caplog.text


def test_real_library_offline_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # evaluate.load looks for ./squad_v2 first
    ours = score(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS)
    assert evaluate_with_library(FOUR_QUESTIONS, FOUR_PREDICTIONS, FOUR_NA_PROBS) == ours


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "jobs.tasks.squad_v2", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=60, check=False)


def test_cli_has_the_official_interface(tmp_path: Path) -> None:
    from jobs.tasks.squad_v2.synthetic import to_official

    data = tmp_path / "dev.json"
    examples = [{**_flat(q["id"], *q["answers"]["text"]), "title": "t", "context": "c", "question": "?"}
                for q in FOUR_QUESTIONS]
    data.write_text(json.dumps(to_official(examples)))
    (tmp_path / "pred.json").write_text(json.dumps(FOUR_PREDICTIONS))
    (tmp_path / "na.json").write_text(json.dumps(FOUR_NA_PROBS))
    out = tmp_path / "out" / "eval.json"
    done = _run_cli(str(data), str(tmp_path / "pred.json"), "--na-prob-file", str(tmp_path / "na.json"),
                    "--na-prob-thresh", "0.6", "--out-file", str(out))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["exact"] == 75.0 and printed["best_f1_thresh"] == 0.6 and printed["total"] == 4


def test_cli_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    done = _run_cli(str(tmp_path / "missing.json"), str(tmp_path / "pred.json"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
