"""Defects found by trying the merged issue-9 validation as a new user would, through the
real CLI (``orchestrate submit ... --dry-run``): each input here failed before its fix."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobs.contract import DataConfig, TrainConfig, hub_dataset
from orchestrator.cli import build_parser, main
from orchestrator.matrix import preflight
from tests.unit.dry_run import dry_run

REPO = Path(__file__).resolve().parents[2]
HEAD = """
experiment: review
root: {root}
cluster: example-t4
executor: local
defaults: {precision: fp16, data: {synthetic: {}}, max_seq_length: 128, doc_stride: 64}
"""


def submit(tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str], head: str = HEAD) -> tuple[int, str]:
    """``submit --dry-run`` of HEAD + ``body``; (exit code, stderr). Nothing may be written."""
    code, _, err = dry_run(tmp_path, head, body, capsys)
    assert not (tmp_path / "scratch").exists()
    return code, err


def test_a_broken_extends_does_not_hide_the_other_runs_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, """
        runs:
          A1: {batch_size: 0}
          A2: {extends: A9}
          A3: {precision: bf16}
          C1: {extends: C2}
          C2: {extends: C1}
          X: {extends: C1}
    """, capsys)
    assert code == 2
    assert "runs.A2.extends: 'A9' is not a run" in err
    assert "runs.C1.extends: extends cycle: C1 -> C2 -> C1" in err
    assert "runs.A1.batch_size: 0: Input should be greater than or equal to 1" in err  # the value is named
    assert "runs.A3: precision bf16 is not supported on Tesla T4" in err


@pytest.mark.parametrize("runs, expected", [
    ("runs: {A1: {}, A2: {extends: [A1]}}", "runs.A2.extends: ['A1'] is not a run name: write extends: NAME"),
    ("baseline: [A1]\nruns: {A1: {}}", "baseline: ['A1'] is not a run"),
    ("runs: {1: {}, null: {}, A1: {}}", "runs.None: None is not a safe run name"),
])
def test_malformed_names_are_reported_not_a_traceback(runs: str, expected: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, runs + "\n", capsys)
    assert code == 2 and expected in err, err


def test_a_huge_value_is_not_echoed_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = HEAD.replace("experiment: review", "experiment: " + "a" * 100_000)
    code, err = submit(tmp_path, "runs: {A1: {}}\n", capsys, head=head)
    assert code == 2 and "(100002 characters) is not a safe name" in err and len(err) < 1000


def test_a_misspelt_lora_target_gets_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "bert"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 2}')
    code, err = submit(tmp_path, f"runs: {{A1: {{model_name_or_path: {model}, lora: {{target_modules: [query, valu]}}}}}}\n",
                       capsys)
    assert code == 2 and "'valu' match no module of" in err and "('valu': did you mean 'value'?)" in err, err


def test_profile_errors_name_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "slurm_templates" / "lab"
    profile.mkdir(parents=True)
    (profile / "preamble.sh.j2").write_text("")
    (profile / "profile.yaml").write_text("local_parallelism: 0\nresources: {mem_gb: 0}\n")
    code, err = submit(tmp_path, "runs: {A1: {}}\n", capsys, head=HEAD.replace("example-t4", "lab"))
    assert code == 2
    assert "local_parallelism (line 1): 0: Input should be greater than or equal to 1" in err, err
    assert "resources.mem_gb (line 2): 0: Input should be greater than 0" in err, err


def test_utf16_matrix_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes("experiment: x\nruns: {A1: {}}\n".encode("utf-16"))
    assert main(["submit", str(path), "--dry-run"]) == 2
    assert "UTF-16 text (a UTF-16 byte-order mark): save the file as UTF-8" in capsys.readouterr().err


# ------------------------------------------------------------ hub data set names


@pytest.mark.parametrize("name, config, expected", [
    ("squad_v2", None, ("squad_v2", None)),
    ("rajpurkar/squad_v2", None, ("rajpurkar/squad_v2", None)),  # owner/name, not dataset/config
    ("glue/sst2", None, ("glue", "sst2")),
    ("super_glue/boolq", None, ("super_glue", "boolq")),
    ("nyu-mll/glue/sst2", None, ("nyu-mll/glue", "sst2")),
    ("nyu-mll/glue", "sst2", ("nyu-mll/glue", "sst2")),
    ("glue", "sst2", ("glue", "sst2")),
])
def test_hub_dataset_names(name: str, config: str | None, expected: tuple[str, str | None]) -> None:
    assert hub_dataset(name, config) == expected


def test_a_configuration_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'glue/sst2' already names a configuration: drop data.config"):
        DataConfig(name="glue/sst2", config="cola")


def test_owner_prefixed_hub_ids_are_checked_against_the_task() -> None:
    fits = TrainConfig(task="squad_v2", data=DataConfig(name="rajpurkar/squad_v2"))
    assert preflight.data_problems(fits, "runs.A1") == []
    wrong = TrainConfig(task="sst2", data=DataConfig(name="nyu-mll/glue/mrpc"))
    assert "'nyu-mll/glue/mrpc' has columns sentence1" in preflight.data_problems(wrong, "runs.A1")[0][1]


def test_the_worker_loads_an_owner_name_hub_id_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    from jobs.tasks import TASKS, data

    calls: list[tuple[object, ...]] = []
    split = datasets.Dataset.from_list([{"x": 1}])

    def load_dataset(*args: object) -> dict[str, datasets.Dataset]:  # the hub is not reachable from the tests
        calls.append(args)
        return {"train": split, "validation": split}

    monkeypatch.setattr(data.datasets, "load_dataset", load_dataset)
    for name in ("rajpurkar/squad_v2", "glue/sst2"):
        data.load_splits(TrainConfig(data=DataConfig(name=name)), tmp_path, TASKS["squad_v2"])
    assert calls == [("rajpurkar/squad_v2", None), ("glue", "sst2")]


# ------------------------------------------------------------------------ CLI


def test_force_help_says_it_takes_patterns() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["submit"].format_help()  # type: ignore[union-attr]
    assert "--force PATTERNS" in help_text and "as --only" in help_text


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    matrix = tmp_path / "m.yaml"
    matrix.write_text(textwrap.dedent(HEAD).replace("{root}", str(tmp_path / "s")) + "grid: {seed: [1, 2, 3, 4, 5, 6, 7, 8]}\nruns: {A1: {}}\n")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "submit", str(matrix), "--dry-run"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # `| head -1`
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_refused_value_does_not_hide_the_runs_later_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "bert"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 2}')
    code, err = submit(tmp_path, f"""
        runs:
          A1: {{batch_size: true, precision: bf16, model_name_or_path: {model}, lora: {{target_modules: [valu]}},
               freeze: {{layers: 9}}, doc_stride: 120}}
          A2: {{precision: bf16x, optimizer: adamw_8bit, gpus: 1}}
    """, capsys)
    assert code == 2
    assert "runs.A1.batch_size: True: Input should be a valid integer" in err
    assert "runs.A1: precision bf16 is not supported on Tesla T4" in err
    assert "runs.A1.lora.target_modules: 'valu' match no module" in err
    assert "runs.A1.freeze.layers: 9 exceeds the 2 layers" in err
    assert "runs.A1.doc_stride: 120 does not fit" in err
    assert "runs.A2.precision: 'bf16x' is not one of" in err
    assert "runs.A2: precision" not in err  # nothing said about the default that stands in for the refused value


def test_run_only_keys_in_defaults_say_where_they_belong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, "runs: {A1: {}, A2: {extend: A1}}\n",
                       capsys, head=HEAD.replace("defaults: {", "defaults: {extend: A1, "))
    assert code == 2
    assert "defaults.extend: unknown key: extends is written on a run (runs.NAME.extends: A1), not here" in err
    assert "runs.A2.extend: unknown key: write extends: A1" in err


def test_a_date_as_experiment_name_says_to_quote_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, "runs: {A1: {}}\n", capsys, head=HEAD.replace("experiment: review", "experiment: 2024-01-01"))
    assert code == 2 and "quote it: YAML read it as a number or a date" in err


def test_a_refused_grid_axis_does_not_hide_the_other_axes_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, """
        grid: {batch_size: [8, true], seed: 3}
        runs:
          A1: {grid: {learning_rate: ["3e-5", 1.0e-4]}}
          A2: {batch_size: 0}
    """, capsys)
    assert code == 2
    assert "grid.seed: an axis is a list of values" in err
    assert "grid.batch_size: True: Input should be a valid integer" in err
    assert "runs.A1.grid.learning_rate: '3e-5': Input should be a valid number" in err  # where it was written
    assert "runs.A2.batch_size: 0: Input should be greater than or equal to 1" in err


def test_a_runs_data_source_replaces_the_inherited_one(tmp_path: Path) -> None:
    from orchestrator.matrix import load_matrix

    rows = tmp_path / "train.jsonl"
    # ten rows: submit refuses a max_train_samples above a local file's rows
    rows.write_text('{"id": "1", "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}\n' * 10)
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(HEAD).replace("{root}", str(tmp_path / "s")).replace(
        "data: {synthetic: {}}", "data: {synthetic: {}, max_train_samples: 10}") + textwrap.dedent(f"""
        runs:
          SYN: {{}}
          FILES: {{data: {{train_file: {rows}, validation_file: {rows}}}, doc_stride: 32}}
          HUB: {{extends: FILES, data: {{name: rajpurkar/squad_v2}}}}
    """))
    data = {spec.run_name: spec.train.data for spec in load_matrix(path).runs}
    assert data["SYN"].synthetic is not None
    assert (data["FILES"].train_file, data["FILES"].synthetic, data["FILES"].max_train_samples) == (str(rows), None, 10)
    assert (data["HUB"].name, data["HUB"].train_file, data["HUB"].validation_file) == ("rajpurkar/squad_v2", None, None)


def test_a_missing_profile_does_not_hide_the_runs_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, """
        executor: slrum
        runs:
          A1: {batch_size: 0, resources: {mem_gb: 16G, time_min: "4:00:00"}}
    """, capsys, head=HEAD.replace("example-t4", "exmaple-t4").replace("executor: local\n", ""))
    assert code == 2
    assert "executor: 'slrum' is not one of auto, slurm, local (did you mean 'slurm'?)" in err
    assert "cluster: 'exmaple-t4' is not a cluster profile (did you mean 'example-t4'?)" in err
    assert "runs.A1.batch_size: 0: Input should be greater than or equal to 1" in err
    assert "runs.A1.resources.mem_gb: '16G': Input should be a valid number; write GB as a number (16G is mem_gb: 16)" in err
    assert "time_min: 240" in err


def test_a_grid_far_beyond_max_runs_is_refused_before_it_is_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    axis = ", ".join(str(i + 1) for i in range(3000))  # 3 axes of 3,000 values: 2.7e10 runs, from a 40 KB file
    started = time.monotonic()
    code, err = submit(tmp_path, f"grid: {{seed: [{axis}], batch_size: [{axis}], epochs: [{axis}]}}\nruns: {{A1: {{}}}}\n", capsys)
    assert code == 2 and "grid: the matrix expands to more than 5000 runs (max_runs)" in err
    assert time.monotonic() - started < 10


def test_compressed_data_files_the_worker_reads_are_accepted(tmp_path: Path) -> None:
    import gzip

    from jobs.tasks import TASKS

    row = b'{"id": "1", "question": "q", "context": "c", "answers": {"text": [], "answer_start": []}}\n'
    good, fake = tmp_path / "train.jsonl.gz", tmp_path / "fake.jsonl.gz"
    good.write_bytes(gzip.compress(row))
    fake.write_bytes(row)  # named .gz, not compressed
    needed = TASKS["squad_v2"].required_columns
    assert preflight.file_problem(str(good), needed) is None
    assert "cannot be decompressed (Not a gzipped file" in str(preflight.file_problem(str(fake), needed))


def test_a_single_name_where_a_list_is_wanted_says_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, "runs: {A1: {lora: {target_modules: query}}}\n", capsys)
    assert code == 2 and "runs.A1.lora.target_modules: 'query': a list is wanted, e.g. [query]" in err, err


def test_a_section_given_as_a_value_shows_the_form_to_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """oom_retry: true or noise: word_swap got pydantic's "a valid dictionary or instance of OomRetryConfig"."""
    code, err = submit(tmp_path, """
        runs:
          A1: {oom_retry: true, data: {synthetic: {}, noise: word_swap}}
          A2: {lora: 8, freeze: [1]}
    """, capsys)
    assert code == 2, err
    assert "runs.A1.oom_retry: True: a section is wanted; write e.g. oom_retry: {max_adaptations: 2}" in err
    assert "runs.A1.data.noise: 'word_swap': a section is wanted; write e.g. noise: {kind: word_swap, rate: 0.1}" in err
    assert "runs.A2.lora: 8: a section is wanted; write e.g. lora: {r: 8}" in err
    assert "runs.A2.freeze: [1]: a section is wanted; write e.g. freeze: {layers: 6}" in err
    assert "instance of" not in err


def test_a_compressed_csv_and_a_json_list_of_records_are_read_at_submit(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """t.csv.gz was parsed as JSON ("not JSON Lines, and not one JSON document") and a JSON list of records
    was refused ("the first record is not an object"); both are read, and their columns checked."""
    import csv
    import gzip
    import json

    good = tmp_path / "t.csv.gz"
    with gzip.open(good, "wt", newline="") as handle:
        csv.writer(handle).writerows([["sentence", "label"], ["fine", "1"], ["bad", "0"]])
    records = tmp_path / "t.json"
    records.write_text(json.dumps([{"sentence": "fine", "label": 1}, {"sentence": "bad", "label": 0}]))
    wrong = tmp_path / "w.csv.gz"
    with gzip.open(wrong, "wt", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], ["fine", "1"]])
    code, err = submit(tmp_path, f"""
        runs:
          GZ: {{task: sst2, data: {{train_file: {good}, validation_file: {records}}}}}
          WRONG: {{task: sst2, data: {{train_file: {wrong}, validation_file: {records}}}}}
          MANY: {{task: sst2, data: {{train_file: {good}, validation_file: {records}, max_train_samples: 3}}}}
    """, capsys)
    assert code == 2, err
    assert "runs.WRONG.data.train_file" in err and "has no sentence column" in err, err
    assert "runs.GZ" not in err, err
    # its rows are counted as CSV too (the header was counted as a row of JSON Lines)
    assert "runs.MANY.data.max_train_samples: 3 is more than the 2 training rows" in err, err


def test_a_stride_past_the_window_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = submit(tmp_path, "runs:\n  Q2: {max_seq_length: 64, doc_stride: 128}\n", capsys)
    assert code == 2 and "doc_stride (128) must be smaller than max_seq_length (64): lower doc_stride" in err, err
