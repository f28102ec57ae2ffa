"""ARC data: tasks, augmentation with inverses, canvases and batches."""

from rlan.constants import NUM_CLASSES, OUTSIDE, PAD
from rlan.data.augment import INVERSE_D4, Augmentation, apply_d4, invert_d4, tta_views
from rlan.data.collate import (
    Sample,
    collate_samples,
    decode_prediction,
    encode_target,
    move_batch,
)
from rlan.data.dataset import (
    ArcTrainingDataset,
    BucketBatchSampler,
    QuerySpec,
    eval_batches,
    evaluation_queries,
    make_train_loader,
    set_loader_epoch,
    training_queries,
)
from rlan.data.tasks import ArcTask, DataError, load_tasks, parse_task

__all__ = [
    "INVERSE_D4",
    "Augmentation",
    "apply_d4",
    "invert_d4",
    "tta_views",
    "Sample",
    "collate_samples",
    "decode_prediction",
    "encode_target",
    "move_batch",
    "NUM_CLASSES",
    "OUTSIDE",
    "PAD",
    "ArcTrainingDataset",
    "BucketBatchSampler",
    "QuerySpec",
    "eval_batches",
    "make_train_loader",
    "set_loader_epoch",
    "evaluation_queries",
    "training_queries",
    "ArcTask",
    "DataError",
    "load_tasks",
    "parse_task",
    "training_tasks",
    "evaluation_tasks",
]


def training_tasks(config) -> list[ArcTask]:
    """The tasks named by a RunConfig's data section."""
    d = config.data
    return load_tasks(d.source, d.version, d.split, d.path, d.tasks, d.max_tasks)


def evaluation_tasks(config) -> list[ArcTask]:
    """The tasks named by a RunConfig's evaluation section (the unseen evaluation split by default)."""
    e = config.evaluation
    return load_tasks(e.source, e.version, e.split, e.path, None, e.max_tasks)
