"""`make gpu-check` on this CPU machine: the CPU-runnable part (the CUDA tests' CPU variants) runs, the parts
that measure a GPU are skipped, and the three result files are written as the GPU machine returns them."""

import json

from bench import gpu_check


def test_the_cpu_side_runs_the_cuda_tests_and_skips_the_gpu_parts(tmp_path):
    status = gpu_check.main(["--out", str(tmp_path), "--parts", "cuda_tests", "train", "bench"])
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.log", "results.json", "summary.md"]
    results = json.loads((tmp_path / "results.json").read_text())
    parts = {p["part"]: p for p in results["parts"]}
    assert parts["cuda_tests"]["status"] == "passed", parts["cuda_tests"]
    assert "3 passed" in parts["cuda_tests"]["summary"] and "skipped" in parts["cuda_tests"]["summary"]
    assert parts["train"] == {"part": "train", "status": "skipped", "reason": "no CUDA device"}
    assert results["machine"]["cuda_available"] is False and results["machine"]["ray"] != "missing"
    summary = (tmp_path / "summary.md").read_text()
    assert "| cuda_tests | passed |" in summary and "| bench | skipped |" in summary
    assert "===== cuda_tests (passed)" in (tmp_path / "parts.log").read_text()


def test_each_part_has_a_command_and_a_time_limit(tmp_path):
    commands = gpu_check.commands(tmp_path, tmp_path)
    assert set(commands) == set(gpu_check.PARTS) == set(gpu_check.LIMIT_S)
    assert (
        "--gpus-per-worker" in commands["train"]
        and "0.5" in commands["sweep"]
        and "--gpu-only" in commands["bench"]
    )
    assert max(gpu_check.LIMIT_S.values()) <= gpu_check.BUDGET_S <= 8 * 60  # under 8 minutes in all


def test_a_part_with_no_budget_left_is_skipped_not_started(tmp_path):
    result = gpu_check.run_part("cuda_tests", ["false"], tmp_path, cuda=True, left_s=5)
    assert result == {"part": "cuda_tests", "status": "skipped", "reason": "5 s of the budget left"}
