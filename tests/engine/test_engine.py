import copy
import math

import numpy as np
import pytest
import torch

from rlan import engine
from rlan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlan.diagnostics import EPOCH_LINE_KEYS, METRICS
from rlan.losses import RLANLoss
from rlan.schedule import stages_at
from rlan.train_state import param_groups
from tests.conftest import tiny


class Collect:
    def __init__(self):
        self.reports = []

    def report(self, epoch, metrics, checkpoint_dir):
        self.reports.append((epoch, dict(metrics), checkpoint_dir))


def _params(state):
    return [p.detach().clone() for p in state.core.parameters()]


class Poisoned:
    """The real RLANLoss, with chosen batches (counted from 0) made non-finite: the total itself, or only the
    gradients, through a term of value 0 whose derivative is infinite (sqrt at 0). The test seam of the
    NaN guard: the production loop has no hooks."""

    def __init__(self, config, bad_loss=(), bad_grads=()):
        self.real, self.bad_loss, self.bad_grads, self.calls = (
            RLANLoss(config.training),
            bad_loss,
            bad_grads,
            0,
        )

    def __call__(self, out, batch):
        losses, index = self.real(out, batch), self.calls
        self.calls += 1
        if index in self.bad_loss:
            losses["total"] = losses["total"] * float("nan")
        if index in self.bad_grads:
            logits = out.logits
            losses["total"] = losses["total"] + torch.sqrt(logits - logits.detach()).sum()
        return losses


def _epoch(state, epoch=0):
    return engine.train_epoch(state, epoch, stages_at(state.config, epoch))


def test_a_run_reports_every_epoch_with_the_documented_diagnostics(tmp_path):
    reporter = Collect()
    state = engine.build(tiny("training.output_equivariance_training.enabled=true"))
    engine.fit(state, reporter, checkpoint_root=tmp_path)
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
    reporter = Collect()
    config = tiny("training.max_epochs=1", "training.grad_accumulation_steps=2")
    poisoned = Poisoned(config, bad_loss={1}, bad_grads={2})
    state = engine.build(config, loss_fn=poisoned)
    before = _params(state)
    engine.fit(state, reporter)
    metrics = reporter.reports[0][1]
    assert poisoned.calls >= 3  # both bad batches were reached
    assert metrics["nan_batches"] == 2 and metrics["nan_streak_max"] == 2
    assert all(torch.isfinite(p).all() for p in state.core.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, state.core.parameters()))  # good batches stepped


def test_good_microbatch_gradients_survive_a_bad_one_in_the_same_window():
    """Batch 0 is good, batch 1 is non-finite, same accumulation window: the step still uses batch 0."""
    config = tiny(
        "training.max_epochs=1",
        "training.grad_accumulation_steps=2",
        "data.max_tasks=1",
        "data.samples_per_task=2",
        "training.batch_size=1",
    )
    state = engine.build(config, loss_fn=Poisoned(config, bad_loss={1}))
    before = _params(state)
    outcome = _epoch(state)
    assert outcome["nan_batches"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, state.core.parameters()))


def test_the_epoch_aborts_after_nan_batches_abort():
    config = tiny("training.max_epochs=1", "training.nan_batches_abort=2")
    state = engine.build(config, loss_fn=Poisoned(config, bad_loss=range(1000)))
    before = _params(state)
    metrics = _epoch(state)
    assert metrics["nan_batches"] == 2 and metrics["epoch_aborted"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, state.core.parameters()))


def test_resume_continues_exactly(tmp_path):
    config = tiny("model.dropout=0.1", "training.output_equivariance_training.enabled=true")
    straight = engine.build(config)
    engine.fit(straight)

    first = engine.build(
        config.model_copy(update={"training": config.training.model_copy(update={"max_epochs": 1})})
    )
    engine.fit(first)
    save_checkpoint(tmp_path, engine.state_dict(first))
    resumed = engine.build(config)
    engine.resume(resumed, tmp_path)
    assert resumed.epoch == 1
    assert resumed.last_metrics == first.history[-1]  # what a run resumed after its last epoch reports again
    engine.fit(resumed)
    for a, b in zip(straight.core.parameters(), resumed.core.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_state_copied_from_a_run_with_another_rate_takes_this_config_s_rate(tmp_path):
    # PBT: a trial loads a better trial's checkpoint, then trains at its own (perturbed) learning rate.
    from rlan.train_state import adopt_learning_rate

    donor = engine.build(tiny("training.learning_rate=0.003", "training.max_epochs=1"))
    engine.fit(donor)
    save_checkpoint(tmp_path, engine.state_dict(donor))
    copier = engine.build(tiny("training.learning_rate=0.0006"))
    engine.resume(copier, tmp_path)
    step, factor = copier.scheduler.last_epoch, copier.scheduler.lr_lambdas[0]
    assert step > 0 and copier.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.003 * factor(step)
    )  # donor's
    adopt_learning_rate(copier)
    expected = 0.0006 * factor(step)
    assert [g["lr"] for g in copier.optimizer.param_groups] == pytest.approx(
        [expected] * len(copier.optimizer.param_groups)
    )
    copier.scheduler.step()  # the schedule goes on from the new base rate
    assert copier.optimizer.param_groups[0]["lr"] == pytest.approx(0.0006 * factor(step + 1))


def test_evaluation_leaves_training_state_alone():
    state = engine.build(tiny("training.max_epochs=1"))
    state.model.train()
    before = _params(state)
    rng = torch.get_rng_state()
    engine.evaluate(state, stages_at(state.config, 0), {"train/entropy": 1.0})
    assert state.core.training
    assert all(torch.equal(a, b) for a, b in zip(before, state.core.parameters()))
    assert torch.equal(rng, torch.get_rng_state())


def test_checkpoint_from_another_model_config_is_refused(tmp_path):
    state = engine.build(tiny())
    save_checkpoint(tmp_path, engine.state_dict(state))
    other = engine.build(tiny("model.hidden_dim=24"))
    with pytest.raises(CheckpointError, match="differs in model.hidden_dim"):
        engine.resume(other, tmp_path)


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    state = engine.build(tiny())
    path = save_checkpoint(tmp_path, engine.state_dict(state))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)


def test_parameter_groups_do_not_decay_norms_biases_or_tables():
    state = engine.build(tiny())
    decay, no_decay = state.optimizer.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == sum(
        p.numel() for p in state.core.parameters()
    )
    assert np.isfinite(state.steps_per_epoch)


def test_optimizer_is_fused_adamw_and_updates_like_the_plain_one():
    """Fused AdamW is a speed choice (rlan/train_state.make_optimizer): the same step as the per-op AdamW."""
    state = engine.build(tiny())
    assert all(g["fused"] for g in state.optimizer.param_groups)
    plain = copy.deepcopy(state.core)
    reference = torch.optim.AdamW(param_groups(plain, 0.01), lr=1e-3, fused=False, foreach=False)
    fused = torch.optim.AdamW(param_groups(state.core, 0.01), lr=1e-3, fused=True)
    for step in range(3):
        for opt, model in ((reference, plain), (fused, state.core)):
            torch.manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            opt.step()
    for a, b in zip(plain.parameters(), state.core.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
