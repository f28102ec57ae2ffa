"""Checkpoint state: model, optimizer, scheduler, epoch, RNG states and config, loaded with weights_only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rlan.errors import BadInputError

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(BadInputError, ValueError):
    """A checkpoint that cannot be used, phrased as one line naming the path and the reason."""


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    path = Path(directory)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted or foreign files all end here
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    missing = {"model", "optimizer", "epoch", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: not an rlan checkpoint (missing {sorted(missing)})")
    return state


# Model settings that decide how the weights are applied, not which weights there are: a checkpoint fits
# a model that differs only in these (e.g. one saved before per-sample canvases, run with canvas_sides null).
WEIGHT_FREE_KEYS = {"canvas_sides"}


def check_compatible(state: dict[str, Any], model_config, where: str) -> None:
    """A checkpoint fits only a model built from the same model section (sizes and switches)."""
    from rlan.config import config_from_dict  # local: config imports nothing from here, keep it that way

    saved = config_from_dict(state["config"], where).model
    changed = sorted(
        k
        for k, v in saved.model_dump().items()
        if k not in WEIGHT_FREE_KEYS and getattr(model_config, k) != v
    )
    if changed:
        raise CheckpointError(
            f"{where}: saved with another model config (differs in model.{changed[0]}: "
            f"{getattr(saved, changed[0])!r} there, {getattr(model_config, changed[0])!r} here)"
        )


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
