"""A tiny real RLAN (hidden 32) and a two-sample batch of random grids, shared by the loss tests."""

import numpy as np
import pytest
import torch

from rlan.config import ModelConfig
from rlan.data.collate import Sample, collate_samples
from rlan.model import RLAN


def random_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def grid(h: int, w: int) -> np.ndarray:
        return rng.integers(0, 10, (h, w))

    samples = [
        Sample(
            "a",
            0,
            ((grid(3, 4), grid(4, 3)), (grid(5, 5), grid(2, 5)), (grid(4, 4), grid(4, 4))),
            grid(3, 3),
            grid(3, 5),
        ),
        Sample("b", 0, ((grid(6, 6), grid(6, 6)), (grid(2, 3), grid(3, 2))), grid(5, 6), grid(6, 5)),
        Sample("c", 0, ((grid(2, 2), grid(2, 2)),), grid(2, 2), grid(2, 2)),  # one pair: no LOO holdout
    ]
    return collate_samples(samples)


@pytest.fixture
def batch() -> dict:
    return random_batch()


@pytest.fixture
def model() -> RLAN:
    torch.manual_seed(0)
    return RLAN(ModelConfig(hidden_dim=32)).eval()
