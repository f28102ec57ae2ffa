"""What a sweep is (SweepSettings) and how it is saved beside its Tune state (rlan_sweep.json), so that
`rlan resume` and `rlan compare` rebuild it from its folder alone, on local or cloud storage."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlan.config import ConfigError, RunConfig

SWEEP_FILE = "rlan_sweep.json"


class SweepError(ConfigError):
    """A sweep that cannot start or resume (exists already, unknown name), phrased as one line."""


@dataclass
class SweepSettings:
    name: str
    storage: str
    tracking_uri: str
    experiment: str
    metric: str = "score"
    mode: str = "max"
    trials: int = 8
    concurrency: int = 2
    scheduler: str = "asha"  # asha | fifo | pbt
    grace_period: int | None = None  # ASHA's first rung in epochs; None = a quarter of max_epochs
    perturbation_interval: int | None = None  # PBT's epochs between exploits; None = a quarter of max_epochs
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    search_space_file: str = ""
    search_space_text: str = ""
    log_checkpoints: bool = False
    max_failures: int = 1
    parent_run_id: str = ""
    echo: bool = True
    knobs: list[str] = field(default_factory=list)
    study_storage: str = ""  # Optuna's RDB storage URL for the study named after the sweep; "" = in memory
    part: int = 0  # 0 = the sweep as started; k = the k-th `rlan extend`, a Tune experiment of its own
    extended_by: list[int] = field(
        default_factory=list
    )  # the root file's record: trials each extension added

    @property
    def root_dir(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @property
    def sweep_dir(self) -> str:
        """This part's folder: the sweep's own, or extend-K inside it (Tune state, Train runs, sweep file)."""
        return f"{self.root_dir}/extend-{self.part}" if self.part else self.root_dir

    @property
    def tune_location(self) -> tuple[str, str]:
        """(storage_path, name) for Tune's RunConfig: their join is sweep_dir."""
        return (self.root_dir, f"extend-{self.part}") if self.part else (self.storage, self.name)

    @property
    def planned_trials(self) -> int:
        """Trials of the whole sweep, every extension included (read from the root file's settings)."""
        return self.trials + sum(self.extended_by)


def write_sweep_file(settings: SweepSettings, base: RunConfig) -> None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(
        settings.sweep_dir if "://" in settings.sweep_dir else str(Path(settings.sweep_dir).resolve())
    )
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{SWEEP_FILE}") as out:
        out.write(
            json.dumps({"settings": asdict(settings), "base_config": base.to_dict()}, indent=1).encode()
        )


def read_sweep_file(sweep_dir: str) -> tuple[SweepSettings, RunConfig]:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(
        sweep_dir if "://" in sweep_dir else str(Path(sweep_dir).resolve())
    )
    try:
        with fs.open_input_stream(f"{path}/{SWEEP_FILE}") as stream:
            saved = json.loads(stream.read())
    except (FileNotFoundError, OSError):
        raise SweepError(f"{sweep_dir}: not an rlan sweep (no {SWEEP_FILE})") from None
    return SweepSettings(**saved["settings"]), RunConfig.model_validate(saved["base_config"])
