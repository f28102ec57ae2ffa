"""The TorchTrainer of a run, for `rlan train` (orchestrator/runs/train.py) and for each sweep trial
(orchestrator/sweeps/trial_driver.py).

Free of MLflow, like the worker loop it runs: a sweep trial's process imports it before its Train run starts.
"""

from __future__ import annotations

import ray.train
from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from orchestrator.runs.train_worker import CHECKPOINT_RANK, train_loop_per_worker
from rlan.config import RunConfig


def build_torch_trainer(
    config: RunConfig,
    *,
    name: str,
    storage: str,
    workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
    gpus_per_worker: float | None = None,
    max_failures: int = 2,
    num_to_keep: int = 2,
    keep_best: tuple[str, str] | None = None,
    callbacks: list | None = None,
    progress: bool = False,
) -> TorchTrainer:
    """A TorchTrainer running `train_loop_per_worker`; callbacks must be ray.train.UserCallback objects.

    keep_best=(metric, mode) keeps the num_to_keep best checkpoints by that metric; Ray Train always keeps
    the latest one besides, so a resume still starts from the last epoch."""
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1 if gpus_per_worker is None else gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "progress": progress, "rank_by": keep_best},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=num_to_keep,
                checkpoint_score_attribute=CHECKPOINT_RANK if keep_best else None,
                checkpoint_score_order=keep_best[1] if keep_best else "max",
            ),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks or [],
        ),
    )
