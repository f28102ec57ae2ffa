"""The two evaluation sets of a run: the unseen evaluation split and the held-out test pairs of training tasks."""

from __future__ import annotations

import torch

from rlan.config import RunConfig
from rlan.data import Augmentation, evaluation_tasks, load_tasks, tta_views
from rlan.data.dataset import QuerySpec, evaluation_queries
from rlan.epoch_stats import MetricAccumulator, dist_is_on, dist_reduce
from rlan.evaluation import QueryResult, evaluate_queries, model_predictor
from rlan.model.output import ModelStages


class EvaluationSets:
    """Loaded once; each run() scores both sets under the epoch's stages without touching training state."""

    def __init__(self, config: RunConfig, device: torch.device, rank: int = 0, world_size: int = 1):
        self.config = config
        self.device = device
        self.rank, self.world_size = rank, world_size
        e = config.evaluation
        self.views = tta_views(e.tta_color_perms, e.eval_seed) if e.tta else [Augmentation()]
        self._sets: dict[str, list[QuerySpec]] | None = None
        self.last_results: dict[str, list[QueryResult]] = {}

    def sets(self) -> dict[str, list[QuerySpec]]:
        if self._sets is None:
            d, e = self.config.data, self.config.evaluation
            sets = {"eval": evaluation_queries(evaluation_tasks(self.config))}
            if d.holdout_test_pairs:  # test pairs of training tasks are never trained on
                train = load_tasks(d.source, d.version, d.split, d.path, d.tasks, d.max_tasks)
                sets["heldout"] = evaluation_queries(train[: e.heldout_max_tasks])
            self._sets = sets
        return self._sets

    @torch.no_grad()
    def run(self, model: torch.nn.Module, stages: ModelStages, train_metrics: dict) -> dict[str, float]:
        was_training = model.training
        model.eval()
        acc = MetricAccumulator()
        try:
            for name, specs in self.sets().items():
                shard = specs[self.rank :: self.world_size]
                results, metrics = evaluate_queries(
                    model_predictor(model, stages),
                    shard,
                    self.views,
                    self.config.evaluation.batch_size,
                    self.device,
                )
                self.last_results[name] = results
                count = metrics.pop("count")
                for key, value in metrics.items():
                    acc.add(f"{name}/{key}", value * count, count)
        finally:
            model.train(was_training)
        reduced = acc.reduce(dist_reduce if dist_is_on(self.world_size) else (lambda t, op: t))
        out = {k: v for k, v in reduced.items() if "#" not in k}
        train_entropy = train_metrics.get("train/entropy", 0.0)
        if "eval/entropy" in out and train_entropy > 0:
            out["entropy_ratio"] = out["eval/entropy"] / train_entropy
        return out
