"""Values of secret-named variables never reach a file or the terminal (the CLI end to end is
tests/integration/test_secrets.py)."""

from __future__ import annotations

from jobs.contract import is_secret_name, redact_assignments, redact_env


def test_redact_assignments_hides_only_secret_values() -> None:
    text = ("export WANDB_API_KEY=abc123\nexport HF_TOKEN='a b c'\nX=1 && AWS_SECRET_ACCESS_KEY=\"q\\\"w\"; echo ok\n"
            "export TOKENIZERS_PARALLELISM=false\n#SBATCH --wckey=submitit\nexport HF_HOME=/scratch/hf")
    assert redact_assignments(text) == (
        "export WANDB_API_KEY=<redacted>\nexport HF_TOKEN=<redacted>\nX=1 && AWS_SECRET_ACCESS_KEY=<redacted>; echo ok\n"
        "export TOKENIZERS_PARALLELISM=false\n#SBATCH --wckey=submitit\nexport HF_HOME=/scratch/hf")


def test_secret_names() -> None:
    assert all(map(is_secret_name, ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "DB_PASSWORD",
                                    "GOOGLE_APPLICATION_CREDENTIALS", "client_secret")))
    assert not any(map(is_secret_name, ("TOKENIZERS_PARALLELISM", "HF_HOME", "SLURM_JOB_ID")))
    assert redact_env({"HF_TOKEN": "x", "TOKENIZERS_PARALLELISM": "false"}) == {"TOKENIZERS_PARALLELISM": "false"}
