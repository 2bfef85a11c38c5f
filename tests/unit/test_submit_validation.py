"""Issue 9, sections 1 and 2: what the login node can know is refused at submit, through
the real CLI (``orchestrate submit ... --dry-run``), every problem in one report, exit 2."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from jobs.contract import write_json_atomic
from orchestrator.cli import main
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import load_matrix
from tests.unit.dry_run import dry_run

REPO = Path(__file__).resolve().parents[2]

HEAD = """
experiment: issue9
root: {root}
cluster: example-t4
executor: local
"""


def submit(tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str], *extra: str,
           head: str = HEAD) -> tuple[int, str, str]:
    """``submit --dry-run`` of HEAD + ``body``; (exit code, stdout, stderr)."""
    return dry_run(tmp_path, head, body, capsys, *extra)


def bert_dir(tmp_path: Path, model_type: str = "bert", layers: int = 2) -> Path:
    """A model directory with only config.json: what the login node reads."""
    folder = tmp_path / f"model-{model_type}"
    folder.mkdir(exist_ok=True)
    key = "n_layers" if model_type == "distilbert" else "num_hidden_layers"
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, key: layers}))
    return folder


# ----------------------------------------------------------------- 1. doc_stride


def test_doc_stride_without_room_for_the_question_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, """
        defaults: {precision: fp16, max_seq_length: 64, doc_stride: 56}
        runs:
          HUB: {data: {name: squad_v2}}
          SYN: {data: {synthetic: {}}}
          FITS: {data: {synthetic: {}}, doc_stride: 24}
    """, capsys)
    assert code == 2, err
    assert ("runs.HUB.doc_stride: 56 does not fit: the tokenizer needs doc_stride < max_seq_length (64) - 3 special "
            "tokens - the question (64 tokens kept for real data) = -3; raise max_seq_length to at least 124") in err
    assert "runs.SYN.doc_stride: 56 does not fit" in err and "= 41; lower doc_stride to at most 40" in err
    assert "runs.FITS" not in err


# ----------------------------------------------------------- 2. lora targets


def test_lora_targets_checked_against_the_models_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bert, distil = bert_dir(tmp_path), bert_dir(tmp_path, "distilbert")
    code, _, err = submit(tmp_path, f"""
        defaults: {{precision: fp16, model_name_or_path: {bert}}}
        runs:
          TYPO: {{lora: {{target_modules: [query, valu]}}}}
          WRONG_ARCH: {{model_name_or_path: {distil}, lora: {{target_modules: [query, value]}}}}
          DISTIL: {{model_name_or_path: {distil}, lora: {{target_modules: [q_lin, v_lin]}}}}
          ALL: {{lora: {{target_modules: all-linear}}}}
          DOTTED: {{lora: {{target_modules: [attention.self.query]}}}}
    """, capsys)
    assert code == 2, err
    assert f"runs.TYPO.lora.target_modules: 'valu' match no module of {bert} (model_type bert)" in err
    assert "or write target_modules: all-linear" in err
    assert "runs.WRONG_ARCH.lora.target_modules: 'query', 'value' match no module" in err and "q_lin" in err
    assert "DISTIL" not in err and "runs.ALL" not in err and "DOTTED" not in err


def test_lora_targets_checked_in_the_hf_cache_of_the_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hub name resolves through the cluster profile's hf_home (shared scratch)."""
    snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 4}))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    profile = tmp_path / "slurm_templates" / "lab"
    shutil.copytree(REPO / "slurm_templates" / "example-t4", profile)
    text = (profile / "profile.yaml").read_text().replace("hf_home: null", f"hf_home: {tmp_path / 'hf'}")
    (profile / "profile.yaml").write_text(text)
    code, _, err = submit(tmp_path, """
        defaults: {precision: fp16, model_name_or_path: acme/tiny-bert}
        runs:
          A1: {lora: {target_modules: [query, valu]}, freeze: {layers: 5}}
    """, capsys, head=HEAD.replace("example-t4", "lab"))
    assert code == 2, err
    assert "runs.A1.lora.target_modules: 'valu' match no module of acme/tiny-bert" in err
    assert "runs.A1.freeze.layers: 5 exceeds the 4 layers of acme/tiny-bert: use at most 4" in err


def test_a_profile_hf_home_under_home_is_read_on_the_login_node(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """hf_home: ~/hf (the README's form) was not expanded on the login node, so the cache was never read:
    the LoRA target and layer checks (and the VRAM estimate) were skipped without a word."""
    snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 4}))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HOME", str(tmp_path))
    _profile(tmp_path, "hf_home: null", "hf_home: ~/hf")
    code, _, err = submit(tmp_path, """
        defaults: {precision: fp16, model_name_or_path: acme/tiny-bert}
        runs:
          A1: {freeze: {layers: 5}}
    """, capsys, head=HEAD.replace("example-t4", "lab"))
    assert code == 2 and "runs.A1.freeze.layers: 5 exceeds the 4 layers of acme/tiny-bert: use at most 4" in err, err


# ------------------------------------------------------ 3. data and layers


def test_data_files_columns_layers_and_hub_data_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bert = bert_dir(tmp_path)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "1", "question": "q?", "context": "c", "answers": {"text": [], "answer_start": []}}) + "\n")
    wrong = tmp_path / "sentences.jsonl"
    wrong.write_text(json.dumps({"sentence": "fine", "label": 1}) + "\n")
    csv_file = tmp_path / "sst2.csv"
    csv_file.write_text("text,label\nfine,1\n")
    code, _, err = submit(tmp_path, f"""
        defaults: {{precision: fp16, model_name_or_path: {bert}}}
        runs:
          MISSING: {{data: {{train_file: {tmp_path}/nope.jsonl, validation_file: {good}}}}}
          COLUMNS: {{data: {{train_file: {good}, validation_file: {wrong}}}}}
          CSV: {{task: sst2, data: {{train_file: {csv_file}, validation_file: {csv_file}}}}}
          LAYERS: {{data: {{train_file: {good}, validation_file: {good}}}, freeze: {{layers: 3}}}}
          HUB: {{task: sst2, data: {{name: glue/mrpc}}}}
          OK: {{task: sst2, data: {{name: glue/sst2}}, freeze: {{layers: 2}}}}
    """, capsys)
    assert code == 2, err
    assert (f"runs.MISSING.data.train_file: '{tmp_path}/nope.jsonl': not found (looked at {tmp_path}/nope.jsonl); "
            "fix the path") in err
    assert (f"runs.COLUMNS.data.validation_file: '{wrong}': has no id, question, context, answers column (its first "
            "record has sentence, label); the task needs id, question, context, answers") in err
    assert "runs.CSV.data.train_file" in err and "has no sentence column (its first record has text, label)" in err
    assert f"runs.LAYERS.freeze.layers: 3 exceeds the 2 layers of {bert}: use at most 2" in err
    assert ("runs.HUB.data.name: 'glue/mrpc' has columns sentence1, sentence2, label, idx, not the sentence task sst2 "
            "needs: use data.name: glue/sst2") in err
    assert "runs.OK" not in err


def test_unreadable_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "adir.jsonl"
    folder.mkdir()
    code, _, err = submit(tmp_path, f"""
        defaults: {{precision: fp16}}
        runs:
          A1: {{data: {{train_file: {folder}, validation_file: {folder}}}}}
    """, capsys)
    assert code == 2 and f"runs.A1.data.train_file: '{folder}': is not a file" in err


# ------------------------------------------------------------- 4. strict types


@pytest.mark.parametrize("setting, expected", [
    ("batch_size: true", "runs.A1.batch_size: True: Input should be a valid integer"),
    ("learning_rate: '3e-5'", "runs.A1.learning_rate: '3e-5': Input should be a valid number"),
    ("epochs: false", "runs.A1.epochs: False: Input should be a valid number"),
    ("lora: {r: '8'}", "runs.A1.lora.r: '8': Input should be a valid integer"),
])
def test_strict_types(setting: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, f"runs:\n  A1: {{precision: fp16, {setting}}}\n", capsys)
    assert code == 2 and expected in err, err


def test_yaml_1_1_float_and_whole_numbers_still_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, "runs:\n  A1: {precision: fp16, learning_rate: 3e-5, epochs: 2, warmup: 0}\n", capsys)
    assert code == 0, err
    run = load_matrix(tmp_path / "m.yaml").runs[0]
    assert run.train.learning_rate == 3e-5 and run.train.epochs == 2.0


# ------------------------------------------------------- 5. every problem at once


def test_unknown_default_does_not_hide_compat_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, "defaults: {precision: bf16, learning_rte: 1.0e-4}\nruns:\n  A1: {}\n", capsys)
    assert code == 2
    assert "defaults.learning_rte: unknown key (did you mean 'learning_rate'?)" in err
    assert "runs.A1: precision bf16 is not supported on Tesla T4; use fp16 (partition t4)" in err


def test_bad_experiment_name_does_not_hide_bad_run_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = HEAD.replace("experiment: issue9", "experiment: ../up")
    code, _, err = submit(tmp_path, "runs:\n  'a b': {}\n  A1: {precision: bf16}\n", capsys, head=head)
    assert code == 2
    assert "experiment: '../up' is not a safe name" in err
    assert "runs.a b: 'a b' is not a safe run name" in err
    assert "precision bf16 is not supported on Tesla T4" in err


# ---------------------------------------------------------------- 6. did you mean


@pytest.mark.parametrize("setting, expected", [
    ("extend: A0", "runs.A1.extend: unknown key: write extends: A0"),
    ("lr: 0.001", "runs.A1.lr: unknown key: write learning_rate: 0.001 (lr is another tool's name for it)"),
    ("per_device_train_batch_size: 16", "runs.A1.per_device_train_batch_size: unknown key: write batch_size: 16"),
    ("num_train_epochs: 2", "runs.A1.num_train_epochs: unknown key: write epochs: 2"),
    ("fp16: true", "runs.A1.fp16: unknown key: write precision: fp16"),
    ("rank: 16", "runs.A1.rank: unknown key: write lora: {r: 16}"),
    ("lora: {rank: 16}", "runs.A1.lora.rank: unknown key: write r: 16"),
    ("extnds: A0", "runs.A1.extnds: unknown key (did you mean 'extends'?)"),
    ("packing: true", "runs.A1.packing: unknown key: write padding: packed (packing is another tool's name)"),
    ("load_best_model_at_end: true", "load_best_model_at_end: unknown key: write early_stopping: {metric: accuracy"),
    ("metric_for_best_model: f1", "write early_stopping: {metric: NAME, patience: 3}"),
    ("lora: {preset: attn-qkv}", "runs.A1.lora.preset: unknown key: write placement: attn-qkv"),
    ("init_from: A0", "runs.A1.init_from: 'A0': a section is wanted; write e.g. init_from: {run: NAME, take: model}"),
    ("early_stopping: true", "a section is wanted; write e.g. early_stopping: {metric: accuracy, patience: 3"),
])
def test_did_you_mean_and_aliases(setting: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, f"runs:\n  A0: {{precision: fp16}}\n  A1: {{precision: fp16, {setting}}}\n", capsys)
    assert code == 2 and expected in err, err


# ------------------------------------------------------------ 7. hostile YAML


def _bomb() -> str:
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 10):
        previous, name = chr(96 + level), chr(97 + level)
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    return text


HOSTILE = {
    "alias-bomb": (_bomb().encode(), "expands to more than 20000 values"),
    "deep": (("x: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested more than 64 levels deep"),
    "huge": (b"x: '" + b"a" * (600 * 1024) + b"'\n", "larger than 512 KiB"),
    "binary": (b"experiment: a\x00\x01\x02\n", "binary data (a NUL byte at offset 13)"),
    "python-tag": (b"experiment: !!python/object/apply:os.system ['touch PWNED']\n", "could not determine a constructor"),
    "not-utf8": (b"experiment: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 15)"),
    "control-char": (b"experiment: a\x07\n", "YAML syntax error"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml_is_answered_within_a_second(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    payload, expected = HOSTILE[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_bytes(payload)
    started = time.perf_counter()
    code = main(["submit", "m.yaml", "--dry-run"])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------- 8. profiles


def _profile(tmp_path: Path, old: str, new: str) -> str:
    profile = tmp_path / "slurm_templates" / "lab"
    shutil.copytree(REPO / "slurm_templates" / "example-t4", profile)
    text = (profile / "profile.yaml").read_text()
    assert old in text
    (profile / "profile.yaml").write_text(text.replace(old, new))
    return str(profile / "profile.yaml")


def test_profile_typo_refused_with_path_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _profile(tmp_path, "  partition: t4\n", "  partiton: t4\n")
    code, _, err = submit(tmp_path, "runs:\n  A1: {precision: fp16}\n", capsys, head=HEAD.replace("example-t4", "lab"))
    assert code == 2, err
    assert f"cluster profile {source}: resources.partiton (line 22): unknown key (did you mean 'partition'?)" in err


def test_profile_bad_values_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _profile(tmp_path, "  gpus: 1\n", "  gpus: one\n")
    text = Path(source).read_text().replace("    bf16: false\n", "    bf16: false\n    gpu_mem: 15\n", 1)
    Path(source).write_text(text.replace("conda_env: null", "conda_env: $(rm -rf ~)"))
    code, _, err = submit(tmp_path, "runs:\n  A1: {precision: fp16}\n", capsys, head=HEAD.replace("example-t4", "lab"))
    assert code == 2, err
    assert "resources.gpus (line 24): 'one': Input should be a valid integer" in err
    assert "partitions.t4.gpu_mem (line 12): unknown key (did you mean 'gpu_mem_gb'?)" in err
    assert "conda_env (line 32): '$(rm -rf ~)': only $VAR or ${VAR} may be expanded in a path" in err


def test_unwritable_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "m.yaml"
    path.write_text(f"experiment: e\nroot: {blocker}/scratch\nexecutor: local\nruns:\n  A1: {{}}\n")
    code = main(["submit", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: root: cannot write {blocker}/scratch/e: Not a directory") and err.count("\n") == 1, err


# --------------------------------------------------- 9. grid inheritance rule


GRID = """
    defaults: {precision: fp16}
    runs:
      P: {lora: {r: 8}, grid: {lora.r: [4, 16], learning_rate: [1.0e-4, 3.0e-4]}}
"""


def test_own_keys_win_over_inherited_grid_axes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, GRID + "      C: {extends: P, lora: {r: 32}, learning_rate: 5.0e-5}\n", capsys)
    assert code == 0, err
    runs = {r.run_name: r for r in load_matrix(tmp_path / "m.yaml").runs}
    assert [n for n in runs if n.startswith("C")] == ["C"]
    assert runs["C"].train.lora is not None and runs["C"].train.lora.r == 32 and runs["C"].train.learning_rate == 5e-5
    assert "P-r16-learning_rate0.0003" in runs  # the parent still sweeps over its own settings


def test_a_child_keeps_the_axes_it_does_not_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, GRID + "      C: {extends: P, lora: {r: 32}}\n", capsys)
    assert code == 0, err
    names = [r.run_name for r in load_matrix(tmp_path / "m.yaml").runs if r.base_name == "C"]
    assert names == ["C-learning_rate0.0001", "C-learning_rate0.0003"]


def test_grid_null_clears_and_empty_grid_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, GRID.replace("    defaults:", "    grid: {seed: [1, 2]}\n    defaults:")
                          + "      C: {extends: P, grid: null}\n", capsys)
    assert code == 0, err
    assert [r.run_name for r in load_matrix(tmp_path / "m.yaml").runs if r.base_name == "C"] == ["C"]
    code, _, err = submit(tmp_path, GRID + "      C: {extends: P, grid: {}}\n", capsys)
    assert code == 2 and "runs.C.grid: grid: {} adds no axis and clears nothing: write grid: null" in err


# ------------------------------------------------ 10. one run-name matching rule


def test_cancel_accepts_what_submit_only_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = submit(tmp_path, "grid: {seed: [1, 2]}\nruns:\n  A4-b: {precision: fp16}\n  A4: {precision: fp16}\n",
                            capsys, "--only", "A4-b")
    assert code == 0 and "A4-b-seed1" in out and " A4-seed1" not in out, out
    matrix = load_matrix(tmp_path / "m.yaml")
    experiment = Experiment(matrix.experiment_dir)
    manifest = {"schema_version": 1, "experiment": matrix.experiment, "runs": {}, "submissions": {},
                "current_runs": {s.run_name: s.run_id for s in matrix.runs}}
    for spec in matrix.runs:
        experiment.run_dir(spec.run_id).write_spec(spec)
    experiment.path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(experiment.path / "manifest.json", manifest)
    assert main(["cancel", str(experiment.path), "A4-b"]) == 0, capsys.readouterr().err
    assert "cancelled 0 run(s) (none were active)" in capsys.readouterr().out
    assert main(["cancel", str(experiment.path), "A4-c"]) == 2
    assert "no run matches A4-c" in capsys.readouterr().err


# ------------------------------------------------------ 11. 8-bit base on a T4


def test_lora_on_8bit_base_on_t4_not_refused_over_compute_dtype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = submit(tmp_path, "runs:\n  Q8: {precision: fp16, lora: {r: 8}, quantization: {bits: 8}}\n", capsys)
    assert code == 0, err
    code, _, err = submit(tmp_path, "runs:\n  Q4: {precision: fp16, lora: {r: 8}, quantization: {bits: 4}}\n", capsys)
    assert code == 2 and "quantization.compute_dtype bf16 is not supported on Tesla T4" in err


# --------------------------------------------------- 12. profile paths in the shell


def test_profile_paths_quoted_and_expanded_on_the_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _profile(tmp_path, "conda_env: null", "conda_env: $HOME/envs/x y")
    text = Path(source).read_text().replace("venv: null", "venv: ~/venvs/o").replace("hf_home: null", "hf_home: ${SCRATCH}/hf")
    Path(source).write_text(text)
    code, out, err = submit(tmp_path, "runs:\n  A1: {precision: fp16}\n", capsys, head=HEAD.replace("example-t4", "lab"))
    assert code == 0, err
    assert 'source "${HOME}/venvs/o/bin/activate"' in out
    assert 'eval "$(conda shell.bash hook)"\nconda activate "${HOME}/envs/x y"' in out
    assert 'export HF_HOME="${SCRATCH}/hf"' in out and 'export HF_DATASETS_CACHE="${SCRATCH}/hf/datasets"' in out
    assert "'$HOME" not in out


def test_force_matches_run_names_by_the_same_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.experiment.manifest import Manifest
    from orchestrator.experiment.plan import plan

    code, _, err = submit(tmp_path, "grid: {seed: [1, 2]}\nruns:\n  A4-b: {precision: fp16}\n  A4: {precision: fp16}\n", capsys)
    assert code == 0, err
    matrix = load_matrix(tmp_path / "m.yaml")
    experiment = Experiment(matrix.experiment_dir)
    for spec in matrix.runs:  # every run done
        write_json_atomic(experiment.run_dir(spec.run_id).result_path, {"f1": 1.0})
    manifest = Manifest.empty(matrix.experiment)
    chosen = plan(matrix, list(matrix.runs), manifest, experiment, force=frozenset({"A4-b"}))
    assert sorted(s.run_name for s in chosen.new) == ["A4-b-seed1", "A4-b-seed2"]
    chosen = plan(matrix, list(matrix.runs), manifest, experiment, force=frozenset({"A4-*1,A4-seed2"}))
    assert sorted(s.run_name for s in chosen.new) == ["A4-b-seed1", "A4-seed1", "A4-seed2"]
