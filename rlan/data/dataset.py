"""Training and evaluation samples from ARC tasks, size-bucketed batches and the DataLoader."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rlan.data.augment import Augmentation, random_augmentation, sample_rng
from rlan.data.collate import Sample, collate_samples
from rlan.data.tasks import ArcTask

IDENTITY = Augmentation()


@dataclass(frozen=True)
class QuerySpec:
    """Which pair of a task is predicted, and from which demo pairs.

    query_index >= 0 names a test pair; -1 - i names demo pair i (held out from its own support).
    """

    task: ArcTask
    query_index: int

    def build(self, augmentation: Augmentation | None = None) -> Sample:
        augmentation = augmentation or IDENTITY
        if self.query_index >= 0:
            support = self.task.train
            query_in, query_out = self.task.test[self.query_index]
        else:
            held = -1 - self.query_index
            support = tuple(p for i, p in enumerate(self.task.train) if i != held)
            query_in, query_out = self.task.train[held]
        aug = augmentation.apply
        return Sample(
            task_id=self.task.task_id,
            query_index=self.query_index,
            support=tuple((aug(i), aug(o)) for i, o in support),
            query_input=aug(query_in),
            query_output=None if query_out is None else aug(query_out),
            augmentation=augmentation,
        )

    @property
    def canvas_size(self) -> int:
        return self.build().canvas_size  # D4 and colours leave the largest side unchanged


def training_queries(tasks: Sequence[ArcTask], holdout_test_pairs: bool) -> list[list[QuerySpec]]:
    """Per task, the queries training draws from.

    With held-out test pairs each demo pair is a query predicted from the other demos (tasks with a
    single demo have none and are skipped); otherwise every test pair is a query from all demos.
    """
    per_task = []
    for task in tasks:
        if holdout_test_pairs:
            specs = [QuerySpec(task, -1 - i) for i in range(len(task.train))] if len(task.train) > 1 else []
        else:
            specs = [QuerySpec(task, i) for i in range(len(task.test))]
        if specs:
            per_task.append(specs)
    return per_task


def evaluation_queries(tasks: Sequence[ArcTask]) -> list[QuerySpec]:
    """Every test pair of every task, predicted from all the task's demos (evaluation, held-out)."""
    return [QuerySpec(task, i) for task in tasks for i in range(len(task.test))]


class ArcTrainingDataset(Dataset):
    """samples_per_task augmented samples per task per epoch, seeded from (seed, epoch, index)."""

    def __init__(
        self,
        tasks: Sequence[ArcTask],
        samples_per_task: int,
        seed: int,
        color_permutation_prob: float = 0.5,
        dihedral_augment: bool = True,
        holdout_test_pairs: bool = True,
    ):
        self.queries = training_queries(tasks, holdout_test_pairs)
        if not self.queries:
            raise ValueError("no training queries: every task needs 2+ demo pairs or a test pair")
        self.samples_per_task = samples_per_task
        self.seed = seed
        self.color_prob = color_permutation_prob
        self.dihedral = dihedral_augment
        self.epoch = 0
        self.canvas_sizes = [[q.canvas_size for q in specs] for specs in self.queries]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.queries) * self.samples_per_task

    def spec(self, index: int) -> QuerySpec:
        specs = self.queries[index // self.samples_per_task]
        return specs[(index % self.samples_per_task) % len(specs)]

    def canvas_size(self, index: int) -> int:
        task_idx, j = divmod(index, self.samples_per_task)
        sizes = self.canvas_sizes[task_idx]
        return sizes[j % len(sizes)]

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.seed, self.epoch, index)
        return self.spec(index).build(random_augmentation(rng, self.color_prob, self.dihedral))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar canvas size, reshuffled each epoch from seed + epoch.

    Buckets by canvas side (boundaries e.g. [10, 15, 20, 25]) so a batch's canvas fits its grids. With
    world_size > 1 each rank takes every world_size-th batch of one shared order, trimmed so that all
    ranks step the same number of times (DDP and ray.train.report are collective).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        boundaries: Sequence[int],
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.boundaries = list(boundaries)
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        buckets: dict[int, list[int]] = {}
        for index, size in enumerate(self.sizes):
            buckets.setdefault(bisect.bisect_left(self.boundaries, size), []).append(index)
        batches = []
        for key in sorted(buckets):
            members = np.array(buckets[key])
            if self.shuffle:
                members = rng.permutation(members)
            batches += [
                members[i : i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size)
            ]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[:usable]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._all_batches()) // self.world_size


def make_train_loader(
    dataset: ArcTrainingDataset,
    batch_size: int,
    boundaries: Sequence[int],
    seed: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over size buckets; call `set_loader_epoch(loader, epoch)` before each epoch."""
    sizes = [dataset.canvas_size(i) for i in range(len(dataset))]
    sampler = BucketBatchSampler(sizes, batch_size, boundaries, seed, True, rank, world_size)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_samples,
        num_workers=num_workers,
        persistent_workers=False,  # workers restart each epoch and so see the dataset's new epoch
        pin_memory=torch.cuda.is_available(),
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    loader.dataset.set_epoch(epoch)
    loader.batch_sampler.set_epoch(epoch)


def eval_batches(
    specs: Sequence[QuerySpec], batch_size: int, augmentation: Augmentation | None = None
) -> Iterator[tuple[list[QuerySpec], dict]]:
    """Deterministic evaluation batches (sorted by canvas so padding stays small), one view each."""
    aug = augmentation or Augmentation()
    order = sorted(range(len(specs)), key=lambda i: specs[i].canvas_size)
    for start in range(0, len(order), batch_size):
        chunk = [specs[i] for i in order[start : start + batch_size]]
        yield chunk, collate_samples([s.build(aug) for s in chunk])
