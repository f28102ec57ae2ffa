"""How many worker bundles a cluster's nodes hold: the count behind refusing runs Ray would queue forever."""

import pytest

from orchestrator.cluster import placeable

NODES = [{"CPU": 0.0}, {"CPU": 2.0, "memory": 1e9}, {"CPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]


@pytest.mark.parametrize(
    ("cpus", "gpus", "expected"),
    [
        (1.0, 0.0, 11),  # 0 + 2 + 1 + 8
        (2.0, 0.0, 5),  # a bundle never spans nodes: 0 + 1 + 0 + 4
        (3.0, 0.0, 2),
        (1.0, 1.0, 1),  # the one GPU node
        (1.0, 0.5, 2),  # fractional GPUs share it
        (0.5, 0.0, 22),
        (16.0, 0.0, 0),
    ],
)
def test_bundles_fit_per_node(cpus, gpus, expected):
    assert placeable(NODES, cpus, gpus) == expected
