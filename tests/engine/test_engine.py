import math

import numpy as np
import pytest
import torch

from rlan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlan.diagnostics import EPOCH_LINE_KEYS, METRICS
from rlan.engine import Hooks, Trainer
from tests.conftest import tiny


class Collect:
    def __init__(self):
        self.reports = []

    def report(self, epoch, metrics, checkpoint_dir):
        self.reports.append((epoch, dict(metrics), checkpoint_dir))


def _params(trainer):
    return [p.detach().clone() for p in trainer.core.parameters()]


def test_a_run_reports_every_epoch_with_the_documented_diagnostics(tmp_path):
    reporter = Collect()
    trainer = Trainer(
        tiny("training.output_equivariance_training.enabled=true"), reporter, checkpoint_root=tmp_path
    )
    trainer.fit()
    assert [e for e, _, _ in reporter.reports] == [0, 1]
    for _, metrics, _ in reporter.reports:
        for key in [
            "train/loss",
            "train/task_loss",
            "train/exact_match",
            "nan_batches",
            "nan_streak_max",
            "logits/min",
            "logits/max",
            "logits/mean_abs",
            "stop/mean",
            "stop/std",
            "stop/min",
            "stop/max",
            "stop/saturated_share",
            "clues/mean",
            "clues/std",
            "meta/share",
            "meta/cap_factor",
            "meta/output_equiv_loss",
            "grad_norm",
            "lr",
            "temperature",
            "samples_per_s",
            "samples_seen",
            "wall_s",
            "eval/exact_match",
            "heldout/nll",
            "score",
            "heldout/exact_match",
            "entropy_ratio",
        ]:
            assert key in metrics and math.isfinite(metrics[key]), key
        # The catalogue describes every key an epoch reports (and the shown lists use catalogue keys only).
        assert set(metrics) <= set(METRICS), sorted(set(metrics) - set(METRICS))
    assert {key for key, _ in EPOCH_LINE_KEYS} <= set(reporter.reports[-1][1])
    last_epoch, last_metrics, last_dir = reporter.reports[-1]
    assert load_checkpoint(last_dir)["epoch"] == last_metrics["epoch"] == 2
    assert reporter.reports[1][1]["meta/output_equiv_loss"] > 0
    assert len(list(tmp_path.glob("epoch_*"))) == 1  # only the latest is kept


def test_nan_loss_and_inf_gradients_are_skipped_and_counted():
    def bad_loss(epoch, index, total):
        return total * float("inf") if (epoch, index) == (0, 1) else total

    def bad_grads(epoch, index, model):
        if (epoch, index) == (0, 2):
            next(model.parameters()).grad.fill_(float("nan"))

    reporter = Collect()
    config = tiny("training.max_epochs=1", "training.grad_accumulation_steps=2")
    trainer = Trainer(config, reporter, hooks=Hooks(after_loss=bad_loss, after_backward=bad_grads))
    before = _params(trainer)
    trainer.fit()
    metrics = reporter.reports[0][1]
    assert metrics["nan_batches"] == 2 and metrics["nan_streak_max"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.core.parameters())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.core.parameters())
    )  # good batches stepped


def test_good_microbatch_gradients_survive_a_bad_one_in_the_same_window():
    """Batch 0 is good, batch 1 is non-finite, same accumulation window: the step still uses batch 0."""
    config = tiny(
        "training.max_epochs=1",
        "training.grad_accumulation_steps=2",
        "data.max_tasks=1",
        "data.samples_per_task=2",
        "training.batch_size=1",
    )
    trainer = Trainer(config, hooks=Hooks(after_loss=lambda e, i, t: t * float("nan") if i == 1 else t))
    before = _params(trainer)
    outcome = trainer.train_epoch(0)
    assert outcome["nan_batches"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.core.parameters()))


def test_the_epoch_aborts_after_nan_batches_abort():
    config = tiny("training.max_epochs=1", "training.nan_batches_abort=2")
    trainer = Trainer(config, hooks=Hooks(after_loss=lambda e, i, t: t * float("nan")))
    before = _params(trainer)
    metrics = trainer.train_epoch(0)
    assert metrics["nan_batches"] == 2 and metrics["epoch_aborted"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.core.parameters()))


def test_resume_continues_exactly(tmp_path):
    config = tiny("model.dropout=0.1", "training.output_equivariance_training.enabled=true")
    straight = Trainer(config)
    straight.fit()

    first = Trainer(
        config.model_copy(update={"training": config.training.model_copy(update={"max_epochs": 1})})
    )
    first.fit()
    save_checkpoint(tmp_path, first.state_dict())
    resumed = Trainer(config)
    resumed.resume(tmp_path)
    assert resumed.epoch == 1
    assert resumed.last_metrics == first.history[-1]  # what a run resumed after its last epoch reports again
    resumed.fit()
    for a, b in zip(straight.core.parameters(), resumed.core.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_evaluation_leaves_training_state_alone():
    trainer = Trainer(tiny("training.max_epochs=1"))
    trainer.model.train()
    before = _params(trainer)
    rng = torch.get_rng_state()
    trainer.evaluation.run(trainer.core, trainer_stages(trainer), {"train/entropy": 1.0})
    assert trainer.core.training
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.core.parameters()))
    assert torch.equal(rng, torch.get_rng_state())


def trainer_stages(trainer):
    from rlan.schedule import stages_at

    return stages_at(trainer.config, 0)


def test_checkpoint_from_another_model_config_is_refused(tmp_path):
    trainer = Trainer(tiny())
    save_checkpoint(tmp_path, trainer.state_dict())
    other = Trainer(tiny("model.hidden_dim=24"))
    with pytest.raises(CheckpointError, match="differs in model.hidden_dim"):
        other.resume(tmp_path)


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    trainer = Trainer(tiny())
    path = save_checkpoint(tmp_path, trainer.state_dict())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)


def test_parameter_groups_do_not_decay_norms_biases_or_tables():
    trainer = Trainer(tiny())
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == sum(
        p.numel() for p in trainer.core.parameters()
    )
    assert np.isfinite(trainer.steps_per_epoch)
