"""End-of-run artifacts of every run (`rlan debug`, `rlan train`, sweep trials): the plots and per-query tables a
run renders into its final checkpoint folder, that folder fetched from cloud storage, and the diagnostics table.
orchestrator/tracking/recorder.py logs them."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from orchestrator.tracking import plots
from rlan.diagnostics import SUMMARY_KEYS
from rlan.evaluation import QueryResult
from rlan.model import run_on_batch
from rlan.schedule import stages_at

if TYPE_CHECKING:  # the Train workers render the final plots: they never import MLflow (train_worker.py)
    from orchestrator.tracking.run_logger import RunLogger


def prediction_rows(results: list[QueryResult], limit: int) -> list[dict]:
    rows = []
    for result in results[:limit]:
        sample = result.spec.build()
        best = result.ranked[0][1] if result.ranked else result.plain
        rows.append(
            {
                "task_id": sample.task_id,
                "query_input": sample.query_input,
                "target": result.target,
                "prediction": best,
                "correct": bool(result.pass_at(1)) if result.ranked else result.exact,
            }
        )
    return rows


def query_records(results: list[QueryResult]) -> list[dict]:
    """One JSON-ready row per evaluated query: which task, solved or not, and the predicted size."""
    return [
        {
            "task_id": r.spec.task.task_id,
            "query_index": r.spec.query_index,
            "exact": bool(r.exact),
            "tta_pass_at_1": bool(r.pass_at(1)) if r.ranked else bool(r.exact),
            "target_shape": list(r.target.shape),
            "predicted_shape": list(r.plain.shape),
        }
        for r in results
    ]


def attention_figure(model: torch.nn.Module, spec, stages, device) -> object | None:
    """Clue attention maps of one held-out sample."""
    from rlan.data import collate_samples, move_batch

    sample = spec.build()
    batch = move_batch(collate_samples([sample]), device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = run_on_batch(model, batch, stages)
    model.train(was_training)
    h, w = sample.query_input.shape
    maps = out.attention_maps[0, :, :h, :w].float().cpu().numpy()
    # centroids come in [0, 1] units of the batch's canvas, which can be larger than the query grid
    cells = out.centroids[0].float().cpu().numpy() * max(batch["query_inputs"].shape[-1] - 1, 1)
    return plots.plot_attention(sample.query_input, maps, cells)


def render_final_plots(trainer, directory: str | Path) -> list[Path]:
    """Predicted-vs-target grids and clue attention of the finished run, as PNGs under <directory>/plots.

    Called on a Ray Train worker (rank 0) for the last epoch: the evaluation results live there, so the
    PNGs travel inside the final checkpoint and the driver logs them to MLflow.
    """
    folder = Path(directory) / "plots"
    written = []
    for name, results in trainer.evaluation.last_results.items():
        folder.mkdir(parents=True, exist_ok=True)
        table = folder / f"{name}_queries.json"
        table.write_text(json.dumps(query_records(results), indent=1))
        written.append(table)
        rows = prediction_rows(results, trainer.config.logging.num_plot_tasks)
        if rows:
            written.append(
                plots.save_figure(plots.plot_predictions(rows), folder / f"predictions_{name}.png")
            )
    sets = trainer.evaluation.sets()
    spec = (sets.get("heldout") or sets.get("eval") or [None])[0]
    if spec is not None:
        stages = stages_at(trainer.config, max(trainer.epoch - 1, 0))
        figure = attention_figure(trainer.core, spec, stages, trainer.device)
        written.append(plots.save_figure(figure, folder / "clue_attention.png"))
    return written


@contextlib.contextmanager
def local_checkpoint(checkpoint: str, storage: str = ""):
    """A local folder holding the checkpoint: the folder itself, or a temporary copy of it when it lives on
    cloud storage. Tune reports such a checkpoint's path without its scheme ('bucket/runs/...'), so the
    filesystem comes from the sweep's storage URI (pyarrow, as Ray's own storage layer uses)."""
    uri = checkpoint if "://" in checkpoint else storage if "://" in storage else ""
    if not uri:
        yield checkpoint
        return
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    source = path if "://" in checkpoint else checkpoint
    with tempfile.TemporaryDirectory(prefix="rlan-checkpoint-") as folder:
        pyarrow.fs.copy_files(
            source, folder, source_filesystem=filesystem, destination_filesystem=pyarrow.fs.LocalFileSystem()
        )
        yield folder


def checkpoint_folders(folder: str) -> list[str]:
    """The checkpoint_* folders of a Train run, oldest first (Ray names them by time; PBT's checkpoint_final
    sorts last), local or on cloud storage; [] when there is none."""
    if "://" not in folder:
        return [str(p) for p in sorted(Path(folder).glob("checkpoint_*")) if p.is_dir()]
    import pyarrow.fs

    filesystem, path = pyarrow.fs.FileSystem.from_uri(folder)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
    except (FileNotFoundError, OSError):
        return []
    names = sorted(
        i.base_name
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_")
    )
    return [f"{folder}/{name}" for name in names]


def newest_checkpoint(folder: str) -> str | None:
    """The newest checkpoint_* folder of a Train run; None when there is none."""
    found = checkpoint_folders(folder)
    return found[-1] if found else None


def checkpointed_metrics(folder: str, epochs: range, storage: str = "") -> dict[int, dict[str, float]]:
    """{epoch: metrics} of the epochs in `epochs` that a Train run's kept checkpoints hold (each keeps the
    metrics of the epoch it ends, `last_metrics`). Read when a trial's driver died between Train keeping
    a checkpoint and Tune receiving its epoch: the report is gone, the checkpoint is not."""
    from rlan.checkpoint import load_checkpoint

    found: dict[int, dict[str, float]] = {}
    for checkpoint in reversed(checkpoint_folders(folder)):
        with local_checkpoint(checkpoint, storage) as local:
            saved = load_checkpoint(local)
        epoch, metrics = int(saved["epoch"]), saved.get("last_metrics") or {}
        if epoch in epochs and metrics:
            found[epoch] = metrics
        if epoch < epochs.start:  # older ones end earlier epochs still
            break
    return found


def log_plot_folder(logger: RunLogger, checkpoint_dir: str | None) -> None:
    """Log the PNGs (to plots/) and per-query tables (to results/) a worker left in a checkpoint's plots/
    folder (see render_final_plots)."""
    if checkpoint_dir and (Path(checkpoint_dir) / "plots").is_dir():
        for png in sorted((Path(checkpoint_dir) / "plots").glob("*.png")):
            logger.log_artifact(str(png), "plots")
        for table in sorted((Path(checkpoint_dir) / "plots").glob("*_queries.json")):
            logger.log_artifact(str(table), "results")


def summary_table(metrics: dict[str, float]) -> str:
    """The seed's diagnostics as a two-column table for the terminal."""
    width = max(len(label) for _, label in SUMMARY_KEYS)
    lines = [f"{'diagnostic':<{width}}  value", f"{'-' * width}  ----------"]
    for key, label in SUMMARY_KEYS:
        if key in metrics and np.isfinite(metrics[key]):
            lines.append(f"{label:<{width}}  {metrics[key]:.4g}")
    return "\n".join(lines)
