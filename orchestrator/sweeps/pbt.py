"""Population Based Training (`rlan sweep --scheduler pbt`): the trials train side by side, and at every
perturbation interval the worst quarter copies the weights of the best quarter and perturbs the continuous
knobs (Ray Tune's PopulationBasedTraining does the bookkeeping).

A PBT trial trains in its own Tune trial process (one worker, the engine as in `rlan debug`) rather than as a
Ray Train run: PBT copies trials through Tune checkpoints, and a Ray Train V2 run inside a Tune trial hands
Tune its metrics and a checkpoint *path* (TuneReportCallback), never a Tune checkpoint, so PBT would find
nothing to copy ("[pbt]: no checkpoint for trial ..."). Each epoch's checkpoint goes to Tune here, with a
note of the trial that wrote it, so a trial that resumes from someone else's weights can say whose.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune import Checkpoint
from ray.tune.schedulers import PopulationBasedTraining

from orchestrator.sweeps.search_space import Knob, SearchSpace
from orchestrator.sweeps.settings import SweepError, SweepSettings
from orchestrator.sweeps.trial_config import PBT_SOURCE, trial_config
from rlan import engine
from rlan.config import RunConfig
from rlan.train_state import TrainState, adopt_learning_rate

CHECKPOINT_PATH = "checkpoint_path"  # the result key a Train trial's last checkpoint arrives under
SOURCE_FILE = "rlan_pbt.json"  # in each checkpoint: the trial and epoch that wrote it, and its weights' sum
PERTURBED = ("uniform", "loguniform")  # PBT perturbs the continuous knobs; the others keep their first draw


def knob_domain(knob: Knob):
    """The knob as a Tune search-space domain (the population's first draw; PBT's resampling)."""
    if knob.type == "choice":
        return tune.choice(list(knob.values))
    if knob.type == "int":
        return tune.qrandint(int(knob.low), int(knob.high), int(knob.step or 1))
    if knob.type == "loguniform":
        return tune.loguniform(knob.low, knob.high)
    return tune.quniform(knob.low, knob.high, knob.step) if knob.step else tune.uniform(knob.low, knob.high)


def param_space(space: SearchSpace) -> dict[str, Any]:
    return {key: knob_domain(knob) for key, knob in space.knobs.items()}


def keep_inside(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """PBT multiplies a value by 0.8 or 1.2, which can leave the space: back to the nearest bound."""
    for key, knob in space.knobs.items():
        if key in config:
            config[key] = knob.clip(config[key])
    return config


def make_pbt_scheduler(
    space: SearchSpace, base: RunConfig, settings: SweepSettings
) -> PopulationBasedTraining:
    mutations = {k: knob_domain(knob) for k, knob in space.knobs.items() if knob.type in PERTURBED}
    if not mutations:
        raise SweepError(
            f"--scheduler pbt: search space {space.path or '(text)'} has no uniform or loguniform knob to perturb"
        )
    return PopulationBasedTraining(
        time_attr="epoch",
        perturbation_interval=settings.perturbation_interval or max(1, base.training.max_epochs // 4),
        hyperparam_mutations=mutations,
        quantile_fraction=0.25,
        resample_probability=0.25,
        custom_explore_fn=partial(keep_inside, space),
        # Every trial pauses at the interval until all have reached it, so a copied checkpoint is always of
        # the same epoch as the copier's: its MLflow epochs never step back.
        synch=True,
    )


def weights_sum(state: TrainState) -> float:
    """A fingerprint of the weights (the sum of every parameter), to show whose weights a trial resumed."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in state.core.parameters()))


class TuneReporter:
    """The engine's Reporter in a PBT trial: each epoch's metrics, the knob values in force and the checkpoint
    go to Tune; the first report after copying another trial names it. The last epoch's checkpoint, with its
    plots, is also kept where a Train trial's would be (<sweep>/train/trial-<id>/), for the MLflow end
    artifacts, `rlan evaluate` and `--register`."""

    def __init__(
        self, state: TrainState, trial_id: str, knobs: dict[str, Any], source: str | None, final_dir: str
    ):
        self.state, self.trial_id, self.source, self.final_dir = state, trial_id, source, final_dir
        self.knobs = {f"pbt/{k}": float(v) for k, v in knobs.items() if isinstance(v, int | float)}

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        fingerprint = weights_sum(self.state)
        note = {"trial_id": self.trial_id, "epoch": epoch + 1, "weights_sum": fingerprint}
        Path(checkpoint_dir, SOURCE_FILE).write_text(json.dumps(note))
        extra: dict[str, Any] = {**self.knobs, "pbt/weights_sum": fingerprint, "pbt/copied": 0.0}
        if self.source:
            extra.update({PBT_SOURCE: self.source, "pbt/copied": 1.0})
            self.source = None
        if epoch + 1 == self.state.config.training.max_epochs:
            extra[CHECKPOINT_PATH] = self.keep_final(checkpoint_dir)
        tune.report({**metrics, **extra}, checkpoint=Checkpoint.from_directory(checkpoint_dir))

    def keep_final(self, checkpoint_dir: str) -> str:
        import pyarrow.fs

        from orchestrator.tracking.artifacts import render_final_plots

        render_final_plots(self.state, checkpoint_dir)
        target = self.final_dir if "://" in self.final_dir else str(Path(self.final_dir).resolve())
        pyarrow.fs.copy_files(checkpoint_dir, target)
        return self.final_dir


def pbt_trial(knobs: dict, base_config: RunConfig, settings: SweepSettings) -> None:
    """One member of the population: resumes from the checkpoint Tune hands it (its own after a restart,
    or the better trial's that PBT copied), with this trial's (perhaps perturbed) knobs."""
    config = trial_config(base_config, knobs)
    trial_id = tune.get_context().get_trial_id()
    state = engine.build(config)
    source = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            engine.resume(state, directory)
            written = json.loads(Path(directory, SOURCE_FILE).read_text())
        adopt_learning_rate(state)  # the copied optimizer carries the other trial's rate
        if written["trial_id"] != trial_id:  # PBT copied it: whose, of which epoch, and the weights loaded
            source = f"{written['trial_id']}@{written['epoch']}:{weights_sum(state)!r}"
    final_dir = f"{settings.sweep_dir}/train/trial-{trial_id}/checkpoint_final"
    engine.fit(state, TuneReporter(state, trial_id, knobs, source, final_dir))


def make_pbt_trainable(base: RunConfig, settings: SweepSettings):
    """The PBT trial with its resources: the trial process is the one worker."""
    resources = {"CPU": settings.cpus_per_worker}
    if settings.gpus_per_trial:
        resources["GPU"] = settings.gpus_per_trial
    trainable = tune.with_parameters(pbt_trial, base_config=base, settings=settings)
    return tune.with_resources(trainable, resources)
