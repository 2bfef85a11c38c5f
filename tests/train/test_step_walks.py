"""The Trainer's per-step ``train()`` / ``zero_grad()`` walks made cheap (jobs/step_walks.py): the same
effect as the modules' own methods, and the same training."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch

import jobs.spec_trainer
from jobs.contract import RunDir, TrainConfig
from jobs.step_walks import install, uninstall
from jobs.trainer import run_training

pytestmark = pytest.mark.train


def _bert(tiny_model_dir: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(tiny_model_dir))  # random weights


def test_train_after_eval_sets_every_module_training_and_then_skips_the_walk(tiny_model_dir: str) -> None:
    model = _bert(tiny_model_dir)
    walks = install(model)
    assert walks.fast_train and walks.fast_zero_grad and model.train == walks.train
    model.eval()
    assert not any(module.training for module in model.modules())
    calls: list[bool] = []
    own = walks._train
    walks._train = lambda mode=True: calls.append(mode) or own(mode)  # type: ignore[method-assign]
    assert model.train() is model
    assert all(module.training for module in model.modules()) and calls == [True]
    model.train()  # everything already training: the walk is skipped
    assert calls == [True]
    model.bert.encoder.layer[1].attention.eval()  # one submodule left in eval by someone
    model.train()
    assert calls == [True, True] and all(module.training for module in model.modules())
    model.train(False)
    assert calls == [True, True, False] and not model.bert.embeddings.dropout.training


def test_zero_grad_clears_every_gradient_and_uninstall_restores_the_methods(tiny_model_dir: str) -> None:
    model = _bert(tiny_model_dir)
    model.bert.embeddings.requires_grad_(False)
    model.bert.embeddings.word_embeddings.weight.grad = torch.ones_like(model.bert.embeddings.word_embeddings.weight)
    inputs = torch.randint(0, 100, (2, 8))
    out = model(input_ids=inputs, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
    out.loss.backward()
    assert sum(parameter.grad is not None for parameter in model.parameters()) > 10
    install(model)
    model.zero_grad()
    assert all(parameter.grad is None for parameter in model.parameters())  # the frozen one's too
    uninstall(model)
    assert "train" not in model.__dict__ and "zero_grad" not in model.__dict__
    assert model.train.__func__ is type(model).train  # type: ignore[attr-defined]


def test_a_module_with_its_own_train_keeps_its_walk() -> None:
    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def train(self, mode: bool = True) -> Counting:
            self.calls += 1
            return super().train(mode)

    inner = Counting()
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), inner)
    walks = install(model)
    assert not walks.fast_train and "train" not in model.__dict__
    model.train()
    model.train()
    assert inner.calls == 2  # its train runs every time, as without the shortcut


def _losses(run_dir: RunDir) -> list[float]:
    return [row["loss"] for row in map(json.loads, run_dir.metrics_path.read_text().splitlines()) if "loss" in row]


def test_training_with_the_cheap_walks_is_the_same_training(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                            run_dir_for: Callable[[str], RunDir],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # dropout on, evaluations between the steps (the model goes to eval and back), 6 steps
    train = tiny(task="sst2", data={"synthetic": {"n_train": 96, "n_eval": 32, "seed": 0}}, max_steps=6,
                 eval_steps=2, train_eval_samples=8, precision="fp32")
    installed: list[torch.nn.Module] = []
    real_install = jobs.spec_trainer.install_step_walks

    def spy(model: torch.nn.Module) -> Any:
        installed.append(model)
        walks = real_install(model)
        assert walks.fast_train and walks.fast_zero_grad  # the run's model takes both shortcuts
        return walks

    monkeypatch.setattr(jobs.spec_trainer, "install_step_walks", spy)
    walked = run_training(spec_for(train, "walked"), run_dir_for("walked"))
    assert len(installed) == 1 and "train" not in installed[0].__dict__  # removed when training ended
    monkeypatch.setattr(jobs.spec_trainer, "install_step_walks", lambda model: None)
    plain = run_training(spec_for(train, "plain"), run_dir_for("plain"))
    assert len(_losses(run_dir_for("walked"))) == 6
    assert _losses(run_dir_for("walked")) == _losses(run_dir_for("plain"))
    assert walked["metrics"] == plain["metrics"]
