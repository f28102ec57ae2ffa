"""(c) The data pipeline: load the ARC tasks, then build (augment) and collate an epoch of bucketed batches.

It runs as training runs it (rlan.data.make_train_loader, the default data settings, num_workers 0: in
the training process), so its samples/s can be set against the model's.
"""

from __future__ import annotations

import time

from bench.stats import summary
from rlan.config import DataConfig, TrainingConfig
from rlan.data import ArcTrainingDataset, load_tasks, make_train_loader, set_loader_epoch


def measure(repeats: int = 3, max_batches: int | None = None) -> dict:
    d, t = DataConfig(), TrainingConfig()
    start = time.perf_counter()
    tasks = load_tasks(d.source, d.version, d.split, d.path, d.tasks, d.max_tasks)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    dataset = ArcTrainingDataset(
        tasks, d.samples_per_task, t.seed, d.color_permutation_prob, d.dihedral_augment, d.holdout_test_pairs
    )
    loader = make_train_loader(dataset, t.batch_size, d.bucket_boundaries, t.seed, d.num_workers)
    setup_s = time.perf_counter() - start
    rates = []
    for epoch in range(repeats):
        set_loader_epoch(loader, epoch)
        samples = 0
        start = time.perf_counter()
        for index, batch in enumerate(loader):
            samples += len(batch["task_ids"])
            if max_batches is not None and index + 1 >= max_batches:
                break
        rates.append(samples / (time.perf_counter() - start))
    return {
        "tasks": len(tasks),
        "samples_per_epoch": len(dataset),
        "load_tasks_s": load_s,
        "dataset_and_sampler_s": setup_s,
        "samples_per_s": summary(rates),
    }
