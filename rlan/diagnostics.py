"""Every metric an epoch reports, declared once: its key, what it means and where it appears.

The keys are the MLflow metric names and the Tune metric names (MLflow spells '@' as '_at_'). The lists the
rest of the project shows (the epoch line, the learning curves, the end-of-run table, `rlan compare`'s
columns, the ablation report's reductions) are read from this catalogue, never typed again elsewhere.
rlan/epoch_stats.py and rlan/evaluation_sets.py compute the values; tests/engine/test_catalogue.py checks
that a real epoch reports nothing the catalogue does not describe.

The sweep objective is `score` (maximise), from held-out data only:
    score = heldout/exact_match + 0.001 * exp(-heldout/nll)   (the eval/* pair when there is no held-out set)
exp(-nll) is the geometric mean probability the model gives the true cells, in (0, 1], so the second term
orders trials with equal exact match by how well they predict the unseen outputs, and never outweighs one
more solved query of up to 1000. No training loss and no regulariser weight enters it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    meaning: str
    line: str = ""  # its label on the one-line-per-epoch progress output ('' = not shown)
    summary: str = ""  # its label in the end-of-run diagnostics table ('' = not shown)
    curve: bool = False  # drawn on the learning-curve plot of every run
    compare: bool = False  # a column of `rlan compare`
    ablation: tuple[str, str] | None = None  # (column, how the ablation report reduces its epoch series)


def _per_set(prefix: str, where: str) -> list[Metric]:
    """The rlan.evaluation metrics of one evaluation set (eval: the unseen split; heldout: test pairs of
    training tasks)."""
    name = {"eval": "eval", "heldout": "held-out"}[prefix]
    heldout = prefix == "heldout"
    return [
        Metric(f"{prefix}/exact_match", f"share of {where} queries predicted exactly (identity view)",
               line=f"{name} EM", summary=f"{name} exact match", curve=True, compare=True,
               ablation=(f"{prefix}_exact_match", "last")),
        Metric(f"{prefix}/tta_exact_match", f"share of {where} queries whose TTA vote's top answer is right",
               summary=f"{name} TTA exact match"),
        Metric(f"{prefix}/pass_at_2", f"share of {where} queries solved by one of the vote's two top answers"),
        Metric(f"{prefix}/pass_at_3", f"share of {where} queries solved by one of the vote's three top answers"),
        Metric(f"{prefix}/pixel_accuracy", f"share of right cells inside the true output, {where} queries",
               summary="eval pixel accuracy" if not heldout else "", compare=heldout),
        Metric(f"{prefix}/tta_consensus", f"mean share of TTA views agreeing with the vote's answer, {where}",
               summary="eval TTA consensus" if not heldout else "",
               ablation=("tta_consensus", "last") if not heldout else None),
        Metric(f"{prefix}/unique_predictions", f"mean number of distinct answers among the TTA views, {where}"),
        Metric(f"{prefix}/entropy", f"mean DSC attention entropy (nats) on the {where} queries"),
        Metric(f"{prefix}/nll", f"mean per-cell cross-entropy (nats) of the true output canvas, {where}, "
               "identity view", compare=heldout, ablation=("heldout_nll", "last") if heldout else None),
    ]  # fmt: skip


CATALOGUE: tuple[Metric, ...] = (
    Metric("epoch", "epochs done (1-based; the MLflow step)"),
    Metric("score", "the sweep objective (module docstring)", ablation=("score", "last")),
    # ---- training loss (epoch means over every batch; the total after the meta-loss cap)
    Metric("train/loss", "total training loss", line="loss", summary="total loss", curve=True, compare=True),
    Metric("train/task_loss", "stablemax task loss (without the min-clue hinge)", summary="task loss",
           curve=True, ablation=("task_loss", "last")),
    Metric("train/entropy_loss", "mean attention entropy term, capped at 10"),
    Metric("train/sparsity_loss", "min-clue hinge + ponder + entropy ponder, before lambda_sparsity"),
    Metric("train/min_clue_loss", "hinge on fewer clues than training.min_clues"),
    Metric("train/ponder_loss", "cost of each clue used"),
    Metric("train/entropy_ponder_loss", "clues used weighted by their attention entropy"),
    Metric("train/clue_variance_loss", "fix 5: hinge on a batch's clue-count std below the target"),
    Metric("train/stop_saturation_loss", "fix 6: penalty on stop logits past the saturation threshold"),
    Metric("train/lora_reg_loss", "HyperLoRA's delta regulariser (0 without LoRA)"),
    # ---- training accuracy and attention, on the augmented training queries in train mode
    Metric("train/exact_match", "share of training queries predicted exactly", line="train EM",
           summary="train exact match", curve=True, ablation=("train_exact_match", "last")),
    Metric("train/pixel_accuracy", "share of right cells inside the true output, training queries"),
    Metric("train/entropy", "DSC attention entropy (nats), mean over clues and samples"),
    # ---- the two evaluation sets (rlan.evaluation)
    *_per_set("heldout", "held-out"),
    *_per_set("eval", "evaluation-split"),
    Metric("entropy_ratio", "eval/entropy / train/entropy (the seed's entropy gap)", summary="entropy eval/train",
           ablation=("entropy_ratio", "last")),
    # ---- health
    Metric("nan_batches", "non-finite batches skipped", line="NaN", summary="NaN batches", compare=True,
           ablation=("nan_batches", "sum")),
    Metric("nan_streak_max", "longest run of consecutive non-finite batches", summary="longest NaN streak"),
    Metric("epoch_aborted", "1 when the epoch stopped on training.nan_streak_abort"),
    Metric("logits/min", "lowest final output logit on the counted cells", summary="output logit min",
           ablation=("logit_min", "min")),
    Metric("logits/max", "highest final output logit on the counted cells", summary="output logit max",
           ablation=("logit_max", "max")),
    Metric("logits/mean_abs", "mean |output logit| on the counted cells"),
    Metric("stop/mean", "mean stop logit over all samples and clues", summary="stop logit mean"),
    Metric("stop/std", "std of the stop logits", summary="stop logit std"),
    Metric("stop/min", "lowest stop logit"),
    Metric("stop/max", "highest stop logit", ablation=("stop_abs_max", "max")),
    Metric("stop/saturated_share", "share of |stop logit| > training.stop_saturation_threshold",
           summary="saturated stop share", curve=True, ablation=("stop_saturated_share", "last")),
    Metric("clues/mean", "clues used per sample, mean over the epoch", summary="clues used mean",
           ablation=("clues_mean", "last")),
    Metric("clues/std", "std of clues used over every sample of the epoch", summary="clues used std",
           curve=True, compare=True, ablation=("clues_std", "last")),
    # ---- the meta losses (raw values, 0 while inactive) and the cap
    Metric("meta/share", "weighted meta losses / total loss, after the cap", summary="meta share of loss",
           curve=True, compare=True, ablation=("meta_share_max", "max")),
    Metric("meta/cap_factor", "mean meta-loss cap factor (1 = not capped)", summary="cap factor",
           ablation=("cap_factor_min", "min")),
    Metric("meta/loo_loss", "leave-one-out loss of HyperLoRA"),
    Metric("meta/output_equiv_loss", "fix 3: output-level equivariance loss", summary="output equivariance loss",
           ablation=("output_equiv_loss", "active_mean")),
    Metric("meta/equiv_loss", "context equivariance loss", summary="context equivariance loss",
           ablation=("context_equiv_loss", "active_mean")),
    Metric("lora/delta_norm", "mean per-sample Frobenius norm of the LoRA deltas", summary="LoRA delta norm"),
    Metric("lora/delta_scale", "the schedule's scale on the LoRA deltas this epoch (0 before HyperLoRA)"),
    # ---- optimisation and schedule
    Metric("grad_norm", "mean gradient norm before clipping"),
    Metric("lr", "learning rate at the end of the epoch"),
    Metric("temperature", "the schedule's attention temperature this epoch"),
    # ---- throughput
    Metric("samples", "training samples this epoch"),
    Metric("samples_per_s", "training samples per second this epoch", line="samples/s", summary="samples/s"),
    Metric("epoch_time_s", "seconds of training this epoch (evaluation excluded)"),
    Metric("samples_seen", "training samples so far, resumes included"),
    Metric("wall_s", "seconds since this process started fitting, evaluation included"),
    # ---- what the epoch cost the machine (rlan/epoch_cost.py), per worker: means, peaks as maxima
    Metric("system/cpu_util", "process CPU time / (training seconds x torch threads)", summary="CPU use"),
    Metric("system/peak_rss_mib", "peak resident memory of the process so far, MiB", summary="peak RSS MiB"),
    Metric("system/gflops_per_s", "matmul/conv GFLOP/s the training steps achieved"),
    Metric("system/mfu", "achieved FLOP/s / this device's measured product rate", line="MFU", summary="MFU"),
    Metric(
        "system/matmul_gflops_per_s",
        "the measured product rate (fp32, or bf16 under autocast; CPU: the faster of matmul and 1x1 conv)",
    ),
    Metric("system/gflop_per_sample", "GFLOP of one training sample's step (forward, losses, backward)"),
    Metric("system/gpu_peak_mem_mib", "peak CUDA memory allocated this epoch, MiB (CUDA only)",
           summary="GPU peak MiB"),
    Metric("system/gpu_util", "GPU utilisation share from NVML (CUDA with pynvml only)"),
    Metric("world_size", "Ray Train workers of the run (Train runs only)"),
)  # fmt: skip
METRICS: dict[str, Metric] = {m.key: m for m in CATALOGUE}

# The lists the orchestrator shows, in the order above.
EPOCH_LINE_KEYS: list[tuple[str, str]] = [(m.key, m.line) for m in CATALOGUE if m.line]
SUMMARY_KEYS: list[tuple[str, str]] = [(m.key, m.summary) for m in CATALOGUE if m.summary]
CURVE_KEYS: list[str] = [m.key for m in CATALOGUE if m.curve]
COMPARE_KEYS: list[str] = [m.key for m in CATALOGUE if m.compare]
ABLATION_KEYS: dict[str, tuple[str, str]] = {
    m.ablation[0]: (m.key, m.ablation[1]) for m in CATALOGUE if m.ablation
}

SCORE_TIE_WEIGHT = 0.001
SCORE_DEFINITION = (
    "score = heldout/exact_match + 0.001*exp(-heldout/nll): held-out test pairs only "
    "(exact match first, then the true outputs' cross-entropy; no training loss)"
)


def curve_keys(objective: str | None = None) -> list[str]:
    """The learning-curve keys, with a sweep's objective when it is not one of them."""
    return list(dict.fromkeys([*CURVE_KEYS, *([objective] if objective else [])]))


def selection_score(metrics: dict[str, float]) -> float | None:
    """The sweep objective documented above; None before the first evaluation."""
    prefix = "heldout" if "heldout/exact_match" in metrics else "eval"
    exact = metrics.get(f"{prefix}/exact_match")
    if exact is None:
        return None
    nll = metrics.get(f"{prefix}/nll", math.inf)
    return exact + (SCORE_TIE_WEIGHT * math.exp(-nll) if nll >= 0 else 0.0)
