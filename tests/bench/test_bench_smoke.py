"""`python -m bench --quick` end to end at hidden 32: the table, the JSON and positive numbers."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main
from bench.report import render, targets
from bench.workload import Shape, area_share, batch_indices, epoch_area_share, pad_batch, real_batches


@pytest.mark.timeout(120)
def test_quick_bench_writes_a_table_and_json(tmp_path, capsys):
    out = tmp_path / "results.json"
    results = main(["--quick", "--hidden", "32", "--repeats", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["mode"] == "quick" and saved["machine"]["torch_threads"] >= 1
    assert saved["matmul_fp32_gflops"]["median"] > 0 and saved["conv1x1_fp32_gflops"]["median"] > 0
    labels = [row["label"] for row in saved["train"]]
    assert labels == ["h32 bucketed", "h32 30x30"]
    for row in saved["train"]:
        assert "error" not in row, row
        for key in ("gflop_per_sample", "train_gflops_per_s", "peak_rss_mb", "inference_gflop_per_sample"):
            assert row[key] > 0, key
        for key in ("train_samples_per_s", "inference_samples_per_s"):
            assert row[key]["median"] > 0 and row[key]["min"] <= row[key]["median"] <= row[key]["max"]
    assert saved["data"]["samples_per_s"]["median"] > 0 and saved["data"]["tasks"] == 400
    names = [check["name"] for check in saved["targets"]]
    assert "data pipeline / h128 training step" not in names  # no h128 row in this run
    assert all(isinstance(check["ok"], bool) for check in saved["targets"])
    for text in ("GFLOP/sample", "train samples/s", "h32 bucketed", "h32 30x30", "(c) data", "wrote"):
        assert text in printed
    assert results["train"] == saved["train"]


def test_batches_are_real_bucketed_and_padded_to_30():
    bucketed = real_batches(Shape(hidden=32), 4)
    assert all(b["query_inputs"].shape[0] == 8 for b in bucketed)
    assert all(b["query_inputs"].shape[-1] <= 30 for b in bucketed)
    fixed = pad_batch(bucketed[0], 30)
    assert fixed["query_inputs"].shape[-1] == 30 and fixed["support_inputs"].shape[-1] == 30
    assert fixed["target_mask"].sum() == bucketed[0]["target_mask"].sum()
    share = area_share(batch_indices(8, 8))
    assert abs(share - epoch_area_share(8)) < 0.05  # the 8 batches have the epoch's mix of sizes


def test_targets_and_render_with_a_synthetic_result():
    stat = {"median": 10.0, "min": 9.0, "max": 11.0, "spread": 0.2, "n": 3}
    row = {
        "label": "h128 bucketed",
        "canvas_sides": [10, 25],
        "area_share": 0.26,
        "gflop_per_sample": 15.0,
        "train_samples_per_s": stat,
        "train_gflops_per_s": 150.0,
        "peak_rss_mb": 1500.0,
        "step_memory_mb": 1100.0,
        "inference_samples_per_s": stat,
        "load_before": 1.0,
        "load_after": 1.0,
    }
    results = {
        "machine": {"cpu": "cpu", "cpu_count": 2, "torch": "2", "torch_threads": 2},
        "matmul_fp32_gflops": {**stat, "median": 100.0},
        "conv1x1_fp32_gflops": {**stat, "median": 200.0},  # the faster of the two is the peak
        "train": [row],
        "data": {"tasks": 400, "load_tasks_s": 0.2, "samples_per_s": {**stat, "median": 1000.0}},
    }
    checks = {c["name"]: c for c in targets(results)}
    assert checks["h128 bucketed samples/s"]["ok"]
    assert checks["h128 bucketed share of fp32 product rate"]["value"] == pytest.approx(0.75)
    assert checks["data pipeline / h128 training step"]["value"] == pytest.approx(100.0)
    results["targets"] = list(checks.values())
    text = render(results)
    assert "h128 bucketed" in text and "targets:" in text and "75%" in text and "oneDNN" in text


@pytest.mark.timeout(120)
def test_the_gpu_rows_run_the_same_code_with_cpu_bf16_autocast():
    from bench import gpu

    result = gpu.measure(
        hidden=32, batch=2, batches=1, repeats=1, canvases=("bucketed",), device="cpu", matmul_size=256
    )
    assert result["device"] == "cpu (bf16 autocast)" and result["bf16_matmul_tflops"]["median"] > 0
    (row,) = result["rows"]
    assert "error" not in row, row
    assert row["label"] == "h32 bucketed b2 bf16" and row["max_memory_allocated_mb"] is None
    assert row["gflop_per_sample"] > 0 and row["train_samples_per_s"]["median"] > 0
    assert 0 < row["share_of_bf16_matmul"]


def test_optimizer_step_times_both_adamw_kinds():
    from bench.optimizer_step import step_ms

    assert step_ms(16, False, steps=2) > 0 and step_ms(16, True, steps=2) > 0


def test_the_convolution_times_the_same_product_as_the_matmul():
    from bench.flops import conv_product_rate, fp32_peak, matmul_rate

    conv, matmul = conv_product_rate(size=128, repeats=1, seconds=0.01), matmul_rate(size=128, repeats=1)
    assert conv["median"] > 0 and matmul["median"] > 0
    assert fp32_peak({"matmul_fp32_gflops": matmul, "conv1x1_fp32_gflops": conv}) == max(
        conv["median"], matmul["median"]
    )
    assert fp32_peak({}) == 0.0
