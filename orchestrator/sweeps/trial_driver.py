"""One sweep trial's process: the base config with the sampled knobs, trained by a Ray Train run whose
TuneReportCallback forwards the workers' per-epoch reports to Tune.

Kept apart from orchestrator/sweeps/sweep.py, and free of MLflow and Optuna: Tune starts a fresh process for
every trial, which imports this module (where the trainable lives) before its Train run starts.
"""

from __future__ import annotations

from ray import tune

from orchestrator.runs.trainer import build_torch_trainer
from orchestrator.sweeps.settings import SweepSettings
from orchestrator.sweeps.trial_config import trial_config
from rlan.config import RunConfig


def trial_driver(knobs: dict, base_config: RunConfig, settings: SweepSettings) -> None:
    """One trial: the base config with the sampled knobs, trained by a Ray Train run that reports to Tune.
    The typed config and settings reach the trial through Ray's object store (pickled once, by Ray)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    config = trial_config(base_config, knobs)
    trial_id = tune.get_context().get_trial_id()
    gpus = settings.gpus_per_trial / settings.workers_per_trial
    trainer = build_torch_trainer(
        config,
        name=f"trial-{trial_id}",
        storage=f"{settings.sweep_dir}/train",
        workers=settings.workers_per_trial,
        use_gpu=gpus > 0,
        cpus_per_worker=settings.cpus_per_worker,
        gpus_per_worker=gpus or None,
        max_failures=settings.max_failures,
        keep_best=(settings.metric, settings.mode),  # retention never deletes the best epoch
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()
