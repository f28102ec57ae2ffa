"""The typed configuration of one RLAN run: RunConfig, and loading it from YAML with dotted overrides.

The sections and their defaults are in rlan/config_sections.py; YAML files under configs/ set only what differs.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, field_validator

from rlan.config_sections import (
    ConfigError,
    DataConfig,
    EvaluationConfig,
    LoggingConfig,
    ModelConfig,
    TrainingConfig,
    _Section,
)


class RunConfig(_Section):
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    data: DataConfig = DataConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        # An empty section in YAML (`model:` with nothing under it) means "all defaults".
        return {} if value is None else value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_flat_dict(self) -> dict[str, Any]:
        """{dotted.key: value} for MLflow params and Tune search spaces."""
        return flatten(self.to_dict())

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------ loading
def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def all_keys() -> list[str]:
    """Every dotted key the schema accepts."""
    return sorted(RunConfig().to_flat_dict())


def _closest(key: str) -> str:
    keys = all_keys()
    keys += sorted({k.rsplit(".", 1)[0] for k in keys})  # sections too, for a typo in a section name
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not match:  # a typo in the last part alone: compare leaf names
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        leaves = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[leaves[0]]] if leaves else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{dotted}' goes through '{part}', which is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'training.seed=3' -> ('training.seed', 3); the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _describe(error: dict[str, Any], where: str) -> str:
    dotted = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key '{dotted}'{_closest(dotted)}"
    got = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if not dotted:
        return f"{where}: {message}"
    if isinstance(got, dict):  # a check across several keys of one section
        return f"{where}: '{dotted}': {message}"
    return f"{where}: '{dotted}' = {got!r}: {message}"


def config_from_dict(tree: dict[str, Any], where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        raise ConfigError(_describe(error, where), key) from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """yaml.safe_load a file that must hold a mapping; one-line ConfigError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(tree).__name__}")
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply dotted overrides, validate once. Raises ConfigError on any problem."""
    tree = read_yaml_mapping(path) if path is not None else {}
    where = str(path) if path is not None else "config"
    config_from_dict(tree, where)  # report errors in the file before blaming an override
    applied = []
    for text in overrides:
        key, value = parse_override(text)
        if key not in all_keys() and not any(k.startswith(key + ".") for k in all_keys()):
            raise ConfigError(f"override '{text}': unknown key '{key}'{_closest(key)}", key)
        _set_dotted(tree, key, value, f"override '{text}'")
        applied.append((key, text))
    try:
        return with_absolute_paths(config_from_dict(tree, where))
    except ConfigError as exc:
        # Blame the override that set the bad key (or a key of the section whose check failed).
        for key, text in reversed(applied):
            if key == exc.key or key.startswith(exc.key + "."):
                raise ConfigError(f"override '{text}': {str(exc).split(': ', 1)[1]}", exc.key) from None
        raise


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """data.path and evaluation.path made absolute against this process's working directory, so a path
    checked here names the same files inside Ray workers, which run in their own working directories."""
    sections = {}
    for name in ("data", "evaluation"):
        section = getattr(config, name)
        if section.path and "://" not in section.path:
            sections[name] = section.model_copy(
                update={"path": os.path.abspath(os.path.expanduser(section.path))}
            )
    return config.model_copy(update=sections) if sections else config


def apply_flat(config: RunConfig, flat: dict[str, Any], where: str = "overrides") -> RunConfig:
    """A copy of config with {dotted.key: value} applied (how a sweep trial gets its config)."""
    tree = config.to_dict()
    for key, value in flat.items():
        if key not in RunConfig().to_flat_dict():
            raise ConfigError(f"{where}: unknown key '{key}'{_closest(key)}")
        _set_dotted(tree, key, value, where)
    return config_from_dict(tree, where)
