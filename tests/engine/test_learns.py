"""The training loop learns: a tiny model solves a trivially learnable synthetic task in seconds."""

import json

import numpy as np

from rlan import engine
from rlan.config import load_config
from tests.conftest import TINY_MODEL


def write_recolour_task(folder, seed: int = 0) -> None:
    """Every blue (1) cell becomes red (2), on 3x3 grids of black and blue: 5 demos, 2 tests."""
    rng = np.random.default_rng(seed)

    def pair():
        grid = rng.integers(0, 2, (3, 3))
        return {"input": grid.tolist(), "output": np.where(grid == 1, 2, grid).tolist()}

    task = {"train": [pair() for _ in range(5)], "test": [pair() for _ in range(2)]}
    (folder / "recolour.json").write_text(json.dumps(task))


def test_a_tiny_model_learns_a_trivial_task_to_full_exact_match(tmp_path):
    # The eight D4 views are what let 5 demos generalise to the 2 unseen pairs: without them 2 of 4
    # data seeds memorised and stayed at 0.5 held-out; with them 12 of 12 seeds reach 1.0 by epoch 24.
    write_recolour_task(tmp_path)
    folder = "source=folder", f"path={tmp_path}"
    config = load_config(
        None,
        [
            *(f"data.{o}" for o in folder),
            *(f"evaluation.{o}" for o in folder),
            *TINY_MODEL,
            "model.dropout=0.0",
            "training.max_epochs=24",
            "training.batch_size=5",
            "training.learning_rate=0.005",
            "data.samples_per_task=10",
            "data.color_permutation_prob=0.0",
            "data.dihedral_augment=true",
            "evaluation.tta=false",
            "logging.progress=false",
        ],
    )
    state = engine.build(config)
    engine.fit(state)
    history = state.history
    assert history[0]["train/exact_match"] < 0.5  # it starts out wrong...
    assert history[-1]["train/exact_match"] == 1.0  # ...and ends right, on every training query
    assert history[-1]["heldout/exact_match"] == 1.0  # and on the unseen test pairs
