"""`rlan train` on a real local Ray (2 CPUs): gloo DDP over 2 workers, MLflow written by the driver side only."""

import pickle
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import ray.train
import torch
from mlflow import MlflowClient
from ray.train import WorkerGroupError
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

from orchestrator.runs.train import failure_line, run_train
from orchestrator.runs.train_tracking import MlflowTrainCallback
from orchestrator.runs.train_worker import worker_state
from orchestrator.tracking.names import sanitize_key
from orchestrator.tracking.run_logger import GAP_TAG, RunLogger
from rlan import engine
from rlan.data import ArcTrainingDataset, make_train_loader, set_loader_epoch, training_tasks
from tests.conftest import tiny


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def epoch_samples(config, world_size: int, epoch: int) -> list[int]:
    """Samples each rank trains on in one epoch, from the engine's own dataset and sampler."""
    t, d = config.training, config.data
    dataset = ArcTrainingDataset(
        training_tasks(config), d.samples_per_task, t.seed, d.color_permutation_prob, d.dihedral_augment,
        d.holdout_test_pairs,
    )  # fmt: skip
    counts = []
    for rank in range(world_size):
        loader = make_train_loader(dataset, t.batch_size, d.bucket_boundaries, t.seed, 0, rank, world_size)
        set_loader_epoch(loader, epoch)
        counts.append(sum(len(batch) for batch in loader.batch_sampler))
    return counts


@pytest.mark.slow
def test_two_workers_log_all_reduced_metrics_once_per_epoch(local_ray, tmp_path, capsys):
    config = tiny("data.samples_per_task=6")  # 24 samples: the two ranks get unequal shares
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    run_id, last = run_train(config, tracking_uri=uri, workers=2, storage=str(tmp_path / "ray"))

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {sanitize_key(k): str(v) for k, v in config.to_flat_dict().items()}
    assert run.data.tags["rlan.workers"] == "2"
    assert steps(client, run_id, "epoch") == [1, 2]
    assert steps(client, run_id, "train/loss") == [1, 2]
    assert run.data.metrics["world_size"] == 2
    samples = {m.step: m.value for m in client.get_metric_history(run_id, "samples")}
    for step, value in samples.items():
        per_rank = epoch_samples(config, 2, step - 1)
        assert value == sum(per_rank)  # the whole epoch over both ranks, not rank 0's share
        # ... which tells the ranks apart and shows the 2-rank trim (one process would train on 24)
        assert max(per_rank) < value < sum(epoch_samples(config, 1, step - 1))
    assert last["epoch"] == 2 and last["samples"] == samples[2]

    files = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    assert files == {"checkpoint/checkpoint.pt"}
    local = client.download_artifacts(run_id, "checkpoint/checkpoint.pt", str(tmp_path))
    assert torch.load(local, weights_only=True)["epoch"] == 2
    assert {a.path for a in client.list_artifacts(run_id, "config")} == {"config/resolved_config.yaml"}
    assert "epoch 2/2: loss" in capsys.readouterr().out


def fit_and_save_weights(loop_config: dict) -> None:
    state, reporter = worker_state(loop_config)
    engine.fit(state, reporter)
    weights = torch.cat([p.detach().flatten() for p in state.core.parameters()])
    torch.save(weights, Path(loop_config["out"]) / f"rank{state.rank}.pt")


@pytest.mark.slow
def test_ranks_keep_identical_weights_with_staged_modules_and_meta_losses(local_ray, tmp_path):
    # Meta losses run through the bare module, not the DDP wrapper; HyperLoRA and cross-attention switch on
    # at epoch 2, so some parameters are unused in epoch 1; accumulation all-reduces every micro-batch.
    config = tiny(
        "training.loo_training.enabled=true",
        "training.equivariance_training.enabled=true",
        "training.output_equivariance_training.enabled=true",
        "training.hyperlora_start_epoch=1",
        "training.cross_attention_start_epoch=1",
        "training.grad_accumulation_steps=2",
        "data.samples_per_task=6",
    )
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    TorchTrainer(
        fit_and_save_weights,
        train_loop_config={"config": config, "out": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=2),
        run_config=ray.train.RunConfig(name="identical", storage_path=str(tmp_path / "ray")),
    ).fit()
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.numel() > 10_000 and torch.equal(rank0, rank1)


@pytest.mark.slow
def test_the_same_name_resumes_the_train_snapshot_and_the_mlflow_run(local_ray, tmp_path):
    uri, storage = f"sqlite:///{tmp_path}/mlruns.db", str(tmp_path / "ray")
    first_id, first = run_train(
        tiny("training.max_epochs=1"),
        tracking_uri=uri,
        workers=2,
        storage=storage,
        name="resume-me",
        echo=False,
    )
    between = time.time()
    second_id, second = run_train(
        tiny("training.max_epochs=2"),
        tracking_uri=uri,
        workers=2,
        storage=storage,
        name="resume-me",
        echo=False,
    )

    assert first["epoch"] == 1 and second["epoch"] == 2 and second_id == first_id
    client = MlflowClient(uri)
    assert steps(client, first_id, "epoch") == [1, 2]
    assert steps(client, first_id, "train/loss") == [1, 2]
    run = client.get_run(first_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rlan.resumed_with.training.max_epochs"] == "2"
    # The second run reported epoch 2 only: the epoch-1 checkpoint kept by Ray is the first run's.
    saved = {
        int(torch.load(d / "checkpoint.pt", weights_only=True)["epoch"]): d.stat().st_mtime
        for d in (Path(storage) / "resume-me").glob("checkpoint_*")
        if d.is_dir()
    }
    assert sorted(saved) == [1, 2]
    assert saved[1] < between < saved[2]


@pytest.mark.slow
def test_a_worker_failure_is_one_line_and_a_failed_run(local_ray, tmp_path):
    empty = tmp_path / "no_tasks"
    empty.mkdir()
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    config = tiny("data.source=folder", f"data.path={empty}")
    with pytest.raises(RuntimeError) as caught:
        run_train(config, tracking_uri=uri, storage=str(tmp_path / "ray"), max_failures=0, echo=False)
    message = str(caught.value)
    assert message.startswith("worker 0: DataError: ") and "\n" not in message
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("rlan").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["rlan.error"] == message


def test_a_re_reported_epoch_is_logged_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    run_id = RunLogger(uri, "callbacks").run_id
    callback = MlflowTrainCallback(uri, run_id)
    callback.after_report(None, [{"epoch": 1.0, "train/loss": 2.0}, {"epoch": 1.0}], None)
    pickle.dumps(callback)  # its MLflow client is left behind
    restarted = pickle.loads(pickle.dumps(MlflowTrainCallback(uri, run_id)))  # a new controller's copy
    for epoch, loss in ((1.0, 9.0), (2.0, 1.5)):
        restarted.after_report(None, [{"epoch": epoch, "train/loss": loss}], None)
    history = MlflowClient(uri).get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.5)]


def test_a_worker_group_error_reads_as_the_workers_exception():
    wrapped = UserExceptionWithTraceback(
        ValueError("bad grid\nmore detail"), "Traceback ...\nValueError: bad grid"
    )
    error = WorkerGroupError("rank 1 failed", {1: wrapped})
    assert failure_line(error) == "worker 1: ValueError: bad grid"


def test_an_epoch_whose_report_died_after_its_checkpoint_is_read_back_from_it(tmp_path):
    # The controller died with the driver's node after Train kept epoch 2's checkpoint, before the callback
    # logged epoch 2; the re-run command resumes at epoch 3. The checkpoint holds epoch 2's metrics.
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    run_id = RunLogger(uri, "callbacks").run_id
    storage = tmp_path / "ray"
    folder = storage / "rlan-train-abc"
    for index, epoch in enumerate((1, 2)):
        kept = folder / f"checkpoint_2026-12-07_10-00-0{index}.{index}"
        kept.mkdir(parents=True)
        metrics = {"epoch": float(epoch), "train/loss": 2.0 / epoch}
        state = {"model": {}, "optimizer": {}, "epoch": epoch, "config": {}, "last_metrics": metrics}
        torch.save(state, kept / "checkpoint.pt")
    first = MlflowTrainCallback(uri, run_id, str(folder), str(storage))
    first.after_report(None, [{"epoch": 1.0, "train/loss": 2.0}], None)
    restarted = pickle.loads(pickle.dumps(MlflowTrainCallback(uri, run_id, str(folder), str(storage))))
    restarted.after_report(None, [{"epoch": 3.0, "train/loss": 0.5}], None)
    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.0), (3, 0.5)]
    assert GAP_TAG not in client.get_run(run_id).data.tags
    restarted.after_report(None, [{"epoch": 5.0, "train/loss": 0.4}], None)  # no checkpoint holds epoch 4
    assert client.get_run(run_id).data.tags[GAP_TAG] == "4"
