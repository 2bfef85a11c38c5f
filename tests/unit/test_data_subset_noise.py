"""Few-shot subsets (data.max_train_samples), text noise (data.noise) and the classifier collapse guard."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.contract import DataConfig, NoiseConfig, Resources, RunDir, RunSpec, TrainConfig, config_hash
from jobs.health import check_health
from jobs.noise import CORRUPTIONS, EMOJIS, corrupt
from jobs.subset import allocate, select_subset

LABELS = [0] * 70 + [1] * 30
TEXT = "the quiet film was a small gem of patient acting and warm humour from start to end"


# ------------------------------------------------------------------------- subsets


def test_a_subset_keeps_the_class_proportions() -> None:
    subset = select_subset(len(LABELS), 20, seed=1, labels=LABELS)
    assert Counter(LABELS[i] for i in subset.indices) == {0: 14, 1: 6}
    assert subset.strata == {"0": 14, "1": 6} and subset.strategy == "stratified:label"
    assert len(set(subset.indices)) == 20


def test_every_class_gets_a_row_while_n_allows() -> None:
    labels = [0] * 98 + [1] * 2
    assert Counter(labels[i] for i in select_subset(100, 3, seed=0, labels=labels).indices) == {0: 2, 1: 1}
    assert allocate([98, 2], 1) in ([1, 0], [0, 1])  # N below the classes: one row, no class promised
    assert allocate([5, 0, 3], 8) == [5, 0, 3]


def test_the_same_seed_draws_the_same_subset_and_another_seed_another() -> None:
    first = select_subset(len(LABELS), 20, seed=3, labels=LABELS).indices
    assert select_subset(len(LABELS), 20, seed=3, labels=LABELS).indices == first
    assert select_subset(len(LABELS), 20, seed=4, labels=LABELS).indices != first


def test_a_larger_n_mostly_extends_a_smaller_one() -> None:
    small = set(select_subset(len(LABELS), 10, seed=5, labels=LABELS).indices)
    large = set(select_subset(len(LABELS), 40, seed=5, labels=LABELS).indices)
    assert small <= large


def test_plain_random_and_bounds() -> None:
    subset = select_subset(50, 10, seed=2)
    assert subset.strategy == "random" and len(subset.indices) == 10 and subset.indices == sorted(subset.indices)
    assert select_subset(50, 0, seed=2).indices == []
    with pytest.raises(ValueError, match="cannot draw 51 rows from 50"):
        select_subset(50, 51, seed=2)


def test_the_subset_is_the_same_across_configurations(tmp_path: Path) -> None:
    """The subset depends on (data, N, seed) only: the same for full fine-tuning and LoRA at any lr."""
    datasets = pytest.importorskip("datasets")
    from jobs.tasks.data import train_subset

    rows = datasets.Dataset.from_list([{"idx": i, "sentence": f"s{i}", "label": label} for i, label in enumerate(LABELS)])
    data = {"synthetic": {"n_train": 100}, "max_train_samples": 10}
    full = TrainConfig(task="sst2", seed=7, learning_rate=1e-5, data=data)
    lora = TrainConfig(task="sst2", seed=7, learning_rate=1e-3, lora={"r": 4}, data=data)
    other_seed = TrainConfig(task="sst2", seed=8, data=data)
    _, a, ids_a, _ = train_subset(full, rows)
    _, b, ids_b, _ = train_subset(lora, rows)
    _, c, _, _ = train_subset(other_seed, rows)
    assert a is not None and b is not None and c is not None
    assert a.indices == b.indices and ids_a == ids_b and a.identity() == b.identity()
    assert c.indices != a.indices and c.identity() != a.identity()


def test_squad_v2_subsets_keep_the_share_of_unanswerable_questions() -> None:
    datasets = pytest.importorskip("datasets")
    from jobs.tasks.data import train_subset
    from jobs.tasks.squad_v2 import squad_features
    from jobs.tasks.squad_v2.synthetic import generate_squad_v2

    rows = datasets.Dataset.from_list(generate_squad_v2(120, 0), features=squad_features())
    answerable = sum(bool(a["text"]) for a in rows["answers"])
    train = TrainConfig(task="squad_v2", seed=1, data={"synthetic": {"n_train": 120}, "max_train_samples": 30})
    kept, subset, ids, warnings = train_subset(train, rows)
    assert subset is not None and subset.strategy == "stratified:answerable" and not warnings
    assert abs(sum(bool(a["text"]) for a in kept["answers"]) - round(30 * answerable / 120)) <= 1
    assert ids == [rows["id"][i] for i in subset.indices]


def test_an_n_above_the_rows_keeps_all_with_a_warning() -> None:
    datasets = pytest.importorskip("datasets")
    from jobs.tasks.data import train_subset

    rows = datasets.Dataset.from_list([{"sentence": f"s{i}", "label": i % 2} for i in range(8)])
    train = TrainConfig(task="sst2", data={"name": "glue/sst2", "max_train_samples": 20})
    kept, subset, _, warnings = train_subset(train, rows)
    assert len(kept) == 8 and subset is not None and subset.requested == 20
    assert warnings == ["data.max_train_samples 20 is more than the 8 training rows: all 8 used"]


def test_generated_data_refuses_an_n_above_its_size_and_zero_is_allowed() -> None:
    with pytest.raises(ValidationError, match=r"max_train_samples 500 is more than the 400 rows.*lower it to at most 400"):
        DataConfig(synthetic={"n_train": 400}, max_train_samples=500)
    assert DataConfig(synthetic={"n_train": 400}, max_train_samples=0).max_train_samples == 0
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        DataConfig(synthetic={}, max_train_samples=-1)


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_rate_zero_is_the_identity(kind: str) -> None:
    text = "  two  spaces, and\ttabs stay  "
    assert corrupt(text, kind, 0.0, seed=1, split="train", index=0) == text


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_noise_is_reproducible_from_the_seed(kind: str) -> None:
    one = [corrupt(TEXT, kind, 0.2, seed=1, split="train", index=i) for i in range(20)]
    assert one == [corrupt(TEXT, kind, 0.2, seed=1, split="train", index=i) for i in range(20)]
    assert one != [corrupt(TEXT, kind, 0.2, seed=2, split="train", index=i) for i in range(20)]
    assert one != [corrupt(TEXT, kind, 0.2, seed=1, split="eval", index=i) for i in range(20)]


def _rate(kind: str, rate: float) -> float:
    """The measured share of characters / words the corruption changed, over many examples."""
    words = TEXT.split()
    letters = sum(c.isalpha() for c in TEXT)
    changed = opportunities = 0
    for index in range(400):
        out = corrupt(TEXT, kind, rate, seed=9, split="train", index=index)
        if kind == "char_substitution":
            changed += sum(a != b for a, b in zip(TEXT, out))
            opportunities += letters
            assert len(out) == len(TEXT)
        elif kind == "char_deletion":
            changed += len(TEXT) - len(out)
            opportunities += len(TEXT) - TEXT.count(" ")
        elif kind == "word_deletion":
            changed += len(words) - len(out.split())
            opportunities += len(words)
        elif kind == "word_swap":
            changed += sum(a != b for a, b in zip(words, out.split())) / 2
            opportunities += len(words) - 1
            assert sorted(out.split()) == sorted(words)
        else:
            changed += sum(token in EMOJIS for token in out.split())
            opportunities += len(words)
            assert [token for token in out.split() if token not in EMOJIS] == words
    return changed / opportunities


@pytest.mark.parametrize(("kind", "expected"), [("char_substitution", 0.1), ("char_deletion", 0.1),
                                                ("word_deletion", 0.1), ("emoji_insertion", 0.1),
                                                # a swap takes two words: about rate / (1 + rate) pairs
                                                ("word_swap", 0.1 / 1.1)])
def test_the_rate_is_applied(kind: str, expected: float) -> None:
    assert _rate(kind, 0.1) == pytest.approx(expected, abs=0.02)


def test_emoji_insertion_inserts_emoji_after_words() -> None:
    out = corrupt("a good film", "emoji_insertion", 1.0, seed=0, split="train", index=0)
    tokens = out.split()
    assert tokens[0::2] == ["a", "good", "film"] and all(token in EMOJIS for token in tokens[1::2])


def test_squad_v2_noise_corrupts_only_the_question() -> None:
    datasets = pytest.importorskip("datasets")
    from jobs.noise import corrupt_split
    from jobs.tasks.squad_v2 import squad_features
    from jobs.tasks.squad_v2.synthetic import generate_squad_v2

    rows = datasets.Dataset.from_list(generate_squad_v2(30, 0), features=squad_features())
    noisy, report = corrupt_split(rows, "question", NoiseConfig(kind="char_deletion", rate=0.3), 1, "train")
    assert noisy["context"] == rows["context"] and noisy["answers"] == rows["answers"] and noisy["id"] == rows["id"]
    assert noisy["question"] != rows["question"]
    assert report["column"] == "question" and report["changed"] > 0 and len(report["sample"]) == 20
    assert all(pair["corrupted"] == noisy["question"][pair["index"]] for pair in report["sample"])


def test_noise_config_is_strict_and_part_of_the_identity() -> None:
    NoiseConfig(kind="word_swap", rate=0.1, apply_to=["train"])
    for bad, message in (({"kind": "char_swap", "rate": 0.1}, "char_substitution"),
                         ({"kind": "word_swap", "rate": 1.5}, "less than or equal to 1"),
                         ({"kind": "word_swap", "rate": 0.1, "apply_to": []}, "at least one split"),
                         ({"kind": "word_swap", "rate": 0.1, "apply_to": ["train", "train"]}, "names a split twice"),
                         ({"kind": "word_swap", "rate": 0.1, "apply_to": ["test"]}, "'train' or 'eval'"),
                         ({"kind": "word_swap", "rate": 0.1, "strength": 2}, "Extra inputs")):
        with pytest.raises(ValidationError, match=message):
            NoiseConfig(**bad)
    clean = TrainConfig(task="sst2", data={"synthetic": {}})
    noisy = TrainConfig(task="sst2", data={"synthetic": {}, "noise": {"kind": "word_swap", "rate": 0.1}})
    noisier = TrainConfig(task="sst2", data={"synthetic": {}, "noise": {"kind": "word_swap", "rate": 0.2}})
    assert len({config_hash(clean), config_hash(noisy), config_hash(noisier)}) == 3


# ---------------------------------------------------------------------- the guard


def _spec(baseline: str | None) -> RunSpec:
    return RunSpec(experiment="e", run_name="lora", base_name="lora", run_id="lora-1", series="lora",
                   config_hash="1", baseline_run_id=baseline, train=TrainConfig(task="sst2", data={"synthetic": {}}),
                   resources=Resources())


def _body(accuracy: float, predicted: dict[str, int]) -> dict[str, object]:
    return {"metrics": {"accuracy": accuracy}, "train": {"loss": 0.69},
            "eval": {"num_classes": 2, "predicted_classes": predicted}}


def test_a_classifier_at_chance_is_flagged_whatever_the_baseline(tmp_path: Path) -> None:
    """Half of a 91% baseline is 45.5%: below chance, so the ratio alone never fired on SST-2."""
    runs = tmp_path / "runs"
    RunDir(runs / "full-1").write_result({"metrics": {"accuracy": 91.0}})
    run_dir = RunDir(runs / "lora-1")
    for baseline in ("full-1", None):
        warnings = check_health(_spec(baseline), run_dir, _body(50.9, {"0": 430, "1": 442}))
        assert len(warnings) == 1 and "chance level" in warnings[0], warnings


def test_a_classifier_predicting_one_class_is_flagged(tmp_path: Path) -> None:
    warnings = check_health(_spec(None), RunDir(tmp_path / "runs" / "lora-1"), _body(50.9, {"0": 872, "1": 0}))
    assert any("predicts class 0 for all 872" in w for w in warnings), warnings


def test_a_learned_classifier_is_healthy(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    RunDir(runs / "full-1").write_result({"metrics": {"accuracy": 91.0}})
    assert check_health(_spec("full-1"), RunDir(runs / "lora-1"), _body(88.0, {"0": 400, "1": 472})) == []


def test_collect_flags_a_classifier_at_chance_whatever_the_baseline() -> None:
    import pandas as pd

    from orchestrator.collect.anomalies import find_anomalies

    def row(accuracy: float) -> pd.DataFrame:
        return pd.DataFrame({"run_id": ["r1"], "run_name": ["X1-seed1"], "config_id": ["X1"], "status": ["completed"],
                             "current": [True], "stale": [False], "in_matrix": [True], "warnings": [""],
                             "healthy": [True], "metrics.accuracy": [accuracy], "eval.num_classes": [2]})

    found = find_anomalies(row(51.0), "accuracy", {"X1": 91.0}, {"X1": "A1"})
    assert [a.kind for a in found] == ["collapse"] and "at chance level (50.0 for 2 classes" in found[0].message
    assert find_anomalies(row(88.0), "accuracy", {"X1": 91.0}, {"X1": "A1"}) == []


# ------------------------------------------------------------- submit and collect


def test_submit_refuses_an_n_above_a_local_file_or_a_known_hub_set(tmp_path: Path) -> None:
    from orchestrator.matrix.preflight import data_problems

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"sentence": f"s{i}", "label": i % 2}) + "\n" for i in range(12)))
    local = TrainConfig(task="sst2", data={"train_file": str(path), "validation_file": str(path),
                                           "max_train_samples": 13})
    assert data_problems(local, "runs.A") == [
        ("runs.A.data.max_train_samples", (f"13 is more than the 12 training rows of {str(path)!r}: lower it to at "
                                          "most 12, or drop it to train on every row"))]
    fits = local.model_copy(update={"data": local.data.model_copy(update={"max_train_samples": 12})})
    assert data_problems(fits, "runs.A") == []
    hub = TrainConfig(task="sst2", data={"name": "glue/sst2", "max_train_samples": 100_000})
    assert [key for key, _ in data_problems(hub, "runs.B")] == ["runs.B.data.max_train_samples"]


def test_the_noise_example_is_a_grid_of_kind_by_rate() -> None:
    from orchestrator.matrix import load_matrix

    runs = load_matrix(Path(__file__).resolve().parents[2] / "examples" / "sst2_noise_cpu.yaml").runs
    noisy = [run for run in runs if run.train.data.noise is not None]
    assert {(run.train.data.noise.kind, run.train.data.noise.rate) for run in noisy if run.train.data.noise} == {
        (kind, rate) for kind in ("char_substitution", "word_deletion") for rate in (0.05, 0.2)}
    assert len({run.config_hash for run in runs}) == len(runs) == 5
    assert {run.train.data.max_train_samples for run in runs} == {96}
    assert all(run.train.data.synthetic is not None for run in runs)  # generated data: runs offline on a CPU


def test_collect_shows_the_noise_and_the_training_rows_of_each_configuration(tmp_path: Path) -> None:
    import sys

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from collect_fixtures import SEED_STUDY, run_values, spec_dict, write_run

    from orchestrator.collect import collect

    clean, noisy = SEED_STUDY[0], SEED_STUDY[1]
    noisy = type(noisy)(**{**noisy.__dict__, "train": {
        **noisy.train, "data": {"name": "squad_v2", "max_train_samples": 300,
                                "noise": {"kind": "word_swap", "rate": 0.1, "apply_to": ["eval"]}}}})
    runs_dir = tmp_path / "exp" / "runs"
    for config in (clean, noisy):
        for seed in (1, 2):
            write_run(runs_dir, spec_dict("exp", config, seed, None), "completed", run_values(config, seed))
    collect(tmp_path / "exp", tmp_path / "results", formats=frozenset({"csv", "md"}))
    table = pd.read_csv(tmp_path / "results" / "tables" / "configurations.csv").set_index("id")
    assert table.loc[noisy.base_name, "noise"] == "word_swap 0.1 on eval"
    assert table.loc[clean.base_name, "noise"] == "none"
    assert table.loc[noisy.base_name, "max_train_samples"] == 300
    assert pd.isna(table.loc[clean.base_name, "max_train_samples"])
    shown = (tmp_path / "results" / "tables" / "configurations.md").read_text()
    assert "word_swap 0.1 on eval" in shown and "train samples" in shown


def test_the_feature_cache_key_names_the_subset_and_the_noise(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from jobs.tasks import TASKS
    from jobs.tasks.data import load_splits

    task = TASKS["sst2"]

    def fingerprints(**overrides: object) -> tuple[str, str]:
        data = {"synthetic": {"n_train": 60, "n_eval": 10}, "max_train_samples": 20, **overrides.pop("data", {})}
        train = TrainConfig(task="sst2", data=data, **overrides)
        splits = load_splits(train, tmp_path, task)
        return splits.train_fingerprint, splits.validation_fingerprint

    base = fingerprints(seed=1)
    assert "subset(n=20,seed=1,strategy=stratified:label)" in base[0]
    assert fingerprints(seed=1, learning_rate=1e-3) == base  # same rows, same features, whatever the method
    assert fingerprints(seed=2)[0] != base[0]
    assert fingerprints(seed=1, data={"max_train_samples": 30})[0] != base[0]
    noisy = fingerprints(seed=1, data={"noise": {"kind": "word_swap", "rate": 0.1, "apply_to": ["eval"]}})
    assert noisy[0] == base[0] and noisy[1] != base[1]
