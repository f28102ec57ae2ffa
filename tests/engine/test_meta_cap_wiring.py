"""Fix 2 through the real training step: with rlan_stable_dev.yaml's meta weights and ratio, the logged cap
factor is the seed's formula of the seed's inputs, and the factor really scales the meta gradients.

The task loss is steered to chosen values by a wrapper around the trainer's real loss that rescales the
task term (value and gradient alike); everything else, cap included, is the unmodified training step.
"""

import pytest
import torch

from rlan import engine
from rlan.config import load_config
from rlan.engine import TrainState
from rlan.losses import RLANLoss
from rlan.model import run_on_batch
from rlan.schedule import stages_at
from tests.conftest import TINY_MODEL

SMALL_STABLE_DEV = [
    *TINY_MODEL,
    "model.dropout=0.0",
    "training.batch_size=4",
    "training.grad_accumulation_steps=1",
    "training.max_epochs=1",
    "training.solver_context_start_epoch=0",
    "training.cross_attention_start_epoch=0",
    "training.hyperlora_start_epoch=0",
    "training.hyperlora_warmup_epochs=0",
    "training.equivariance_training.start_epoch=0",
    "training.equivariance_training.num_augmentations=1",
    "training.output_equivariance_training.start_epoch=0",
    "training.loo_training.start_epoch=0",
    "training.loo_training.max_loo_pairs=2",
    "data.tasks=[3c9b0459]",  # one task with 4 demos: LOO has 3-pair supports; one batch per epoch
    "data.samples_per_task=4",
    "logging.progress=false",
]


def seed_factor(task_loss_value: float, weights: list[float], ratio: float) -> float:
    """Reference 5.5, written out again: M = r/(1-r) L, W = sum of weights, f = clip(M/W, 0.01, 1) if W > M."""
    cap, total = ratio / (1 - ratio) * task_loss_value, sum(weights)
    return min(1.0, max(0.01, cap / total)) if total > cap else 1.0


class SteeredLoss:
    """The trainer's real loss with its task term rescaled to `target` (keeps the graph); remembers the
    batch it saw, so the gradient can be recomputed by hand."""

    def __init__(self, loss_fn, target: float):
        self.loss_fn, self.target, self.batch = loss_fn, target, None

    def __call__(self, output, batch):
        self.batch = batch
        losses = dict(self.loss_fn(output, batch))
        task = losses["task_loss"]
        steered = task * (self.target / task.detach())
        losses["total"] = losses["total"] - task + steered
        losses["task_loss"] = steered
        return losses


def make_state(target: float) -> tuple[TrainState, SteeredLoss]:
    config = load_config("configs/rlan_stable_dev.yaml", SMALL_STABLE_DEV)
    steered = SteeredLoss(RLANLoss(config.training), target)
    state = engine.build(config, loss_fn=steered)
    assert len(state.loader) == 1  # one batch: the epoch means are that batch's values
    return state, steered


def one_epoch(state: TrainState) -> dict[str, float]:
    return engine.train_epoch(state, 0, stages_at(state.config, 0))


@pytest.mark.parametrize("target", [1.0, 0.09, 0.0012])
def test_logged_cap_factor_is_the_seeds_formula_of_the_seeds_inputs(target):
    state, _ = make_state(target)
    t = state.config.training
    assert (t.loo_training.loss_weight, t.equivariance_training.loss_weight) == (0.05, 0.01)
    assert t.meta_escalation.meta_loss_cap_ratio == 0.25 and t.meta_escalation.meta_loss_cap_inputs == "seed"
    metrics = one_epoch(state)
    assert metrics["train/task_loss"] == pytest.approx(target, rel=1e-5)
    seen = target + t.lambda_sparsity * metrics["train/min_clue_loss"]  # the seed's task loss holds the hinge
    expected = seed_factor(seen, [0.05, 0.01], 0.25)  # output equivariance is capped, not counted
    assert metrics["meta/cap_factor"] == pytest.approx(expected, rel=1e-6)
    for name in ("loo", "equiv", "output_equiv"):  # every meta loss really ran in this batch
        assert metrics[f"meta/{name}_loss"] > 0


def test_active_inputs_are_kept_as_an_option():
    state, _ = make_state(0.09)
    state.meta.config = state.config.model_copy(deep=True)
    state.meta.config.training.meta_escalation.meta_loss_cap_inputs = "active"
    metrics = one_epoch(state)
    assert metrics["meta/cap_factor"] == pytest.approx(seed_factor(0.09, [0.05, 0.01, 0.02], 0.25), rel=1e-6)


def test_the_factor_scales_the_meta_gradients_in_the_backward():
    state, steered = make_state(0.06)
    params = [p for p in state.core.parameters() if p.requires_grad]
    seen: dict = {}

    def after_backward(grads):  # torch's own hook: once, when the step's backward has every gradient
        seen["actual"] = [g.clone() if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        seen["weights"] = {k: v.clone() for k, v in state.core.state_dict().items()}  # before the step

    handle = torch.autograd.graph.register_multi_grad_hook(params, after_backward, mode="all")
    metrics = one_epoch(state)
    handle.remove()
    state.core.load_state_dict(seen["weights"])  # recompute both parts of the gradient at those weights
    stages = stages_at(state.config, 0)
    out = run_on_batch(state.core, steered.batch, stages)
    losses = state.loss_fn(out, steered.batch)
    terms = state.meta.compute(state.core, steered.batch, out, stages, 0, 0)
    meta = sum(w * loss for w, loss in terms.values())
    base_grads = torch.autograd.grad(losses["total"], params, retain_graph=True, allow_unused=True)
    meta_grads = torch.autograd.grad(meta, params, allow_unused=True)
    zero = [torch.zeros_like(p) for p in params]
    seen["base"] = [g if g is not None else z for g, z in zip(base_grads, zero)]
    seen["meta"] = [g if g is not None else z for g, z in zip(meta_grads, zero)]
    factor = metrics["meta/cap_factor"]
    assert 0.05 < factor < 0.9  # the cap bites
    expected = [b + factor * m for b, m in zip(seen["base"], seen["meta"])]
    uncapped = [b + m for b, m in zip(seen["base"], seen["meta"])]
    flat = lambda grads: torch.cat([g.flatten() for g in grads])  # noqa: E731
    actual, expected, uncapped = flat(seen["actual"]), flat(expected), flat(uncapped)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-7)
    assert (actual - uncapped).abs().max() > 100 * (actual - expected).abs().max()
