"""A sweep's search space: YAML with one entry per dotted RunConfig key, checked before anything starts.

    training.clue_target_variance: {type: uniform, low: 0.1, high: 1.5}
    training.learning_rate: {type: loguniform, low: 5.0e-4, high: 5.0e-3}
    model.num_solver_steps: {type: int, low: 3, high: 9, step: 2}
    model.hyperlora_pooling: {type: choice, values: [simple, d4]}

uniform and loguniform fit float keys; int fits int keys (and float keys, whose schema takes integers);
choice fits any key whose schema accepts every value. Both bounds and every choice are applied to the
schema defaults, so a value the schema refuses fails here, with the schema's reason.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import BaseModel

from rlan.config import ConfigError, RunConfig, _closest, all_keys, apply_flat

TYPES = ("uniform", "loguniform", "int", "choice")
FIELDS = ("type", "low", "high", "values", "step")
_FITS = {"uniform": ("float",), "loguniform": ("float",), "int": ("int", "float")}


class SearchSpaceError(ConfigError):
    """A search-space problem in one line naming the file and the key (the CLI exits 2 on it)."""


@dataclass(frozen=True)
class Knob:
    key: str
    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    values: tuple[Any, ...] = ()

    def distribution(self) -> BaseDistribution:
        if self.type == "choice":
            return CategoricalDistribution(list(self.values))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        return FloatDistribution(self.low, self.high, log=self.type == "loguniform", step=self.step)

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return self._choice(value) is not None
        if not _is_number(value) or not self.low <= value <= self.high:
            return False
        if self.type == "int" and value != int(value):
            return False
        return self.step is None or _on_grid((value - self.low) / self.step)

    def _choice(self, value: Any) -> tuple[Any] | None:
        # 1 == 1.0 == True in Python; a bool only matches a bool.
        for v in self.values:
            if value == v and isinstance(value, bool) == isinstance(v, bool):
                return (v,)
        return None

    def clip(self, value: Any) -> Any:
        """The value itself if inside; else the nearest bound (on the step grid), or the first choice."""
        if self.type == "choice":
            match = self._choice(value)
            return self.values[0] if match is None else match[0]
        if self.contains(value):
            return int(value) if self.type == "int" else value
        if not _is_number(value):
            value = self.low
        value = min(max(value, self.low), self.high)
        if self.step is not None:
            value = min(self.low + round((value - self.low) / self.step) * self.step, self.high)
        return int(round(value)) if self.type == "int" else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _on_grid(ratio: float) -> bool:
    return math.isclose(ratio, round(ratio), abs_tol=1e-9)


@dataclass
class SearchSpace:
    path: str
    text: str
    knobs: dict[str, Knob] = field(default_factory=dict)

    def to_optuna(self) -> dict[str, BaseDistribution]:
        return {key: knob.distribution() for key, knob in self.knobs.items()}

    def base_point(self, config: RunConfig) -> dict[str, Any]:
        """The base config's value of each knob, so the sweep can enqueue the baseline as its first trial.

        A base value outside the space is clipped to the nearest bound (snapped to the step grid); a choice
        knob whose base value is not one of its values takes the first value.
        """
        flat = config.to_flat_dict()
        return {key: knob.clip(flat[key]) for key, knob in self.knobs.items()}

    def contains(self, point: dict[str, Any]) -> bool:
        """True when point sets exactly the knobs, each inside its range (or one of its values)."""
        return set(point) == set(self.knobs) and all(k.contains(point[key]) for key, k in self.knobs.items())


# ------------------------------------------------------------------------------------------ loading
def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; SearchSpaceError (one line) on any problem."""
    if not Path(path).is_file():
        raise SearchSpaceError(f"{path}: search space file not found")
    return parse_search_space(Path(path).read_text(), str(path))


def parse_search_space(text: str, where: str) -> SearchSpace:
    """Validate search-space YAML text; `where` names its origin in errors (a file, or a sweep's tag)."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SearchSpaceError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', None)}") from None
    if not isinstance(tree, dict) or not tree:
        found = "no knobs" if not tree else f"a {type(tree).__name__}"
        raise SearchSpaceError(f"{where}: expected a mapping of dotted config keys to knobs, found {found}")
    knobs = {str(key): _knob(str(key), entry, where) for key, entry in tree.items()}
    return SearchSpace(path=where, text=text, knobs=knobs)


def _knob(key: str, entry: Any, where: str) -> Knob:
    def fail(message: str) -> SearchSpaceError:
        return SearchSpaceError(f"{where}: '{key}': {message}", key)

    if key not in all_keys():
        if any(k.startswith(key + ".") for k in all_keys()):
            raise fail("is a section; write one entry per dotted key, e.g. 'training.learning_rate'")
        raise SearchSpaceError(f"{where}: unknown key '{key}'{_closest(key)}", key)
    if not isinstance(entry, dict):
        raise fail(f"expected a mapping like {{type: uniform, low: 0.1, high: 1.0}}, got {entry!r}")
    for name in entry:
        if name not in FIELDS:
            close = difflib.get_close_matches(str(name), FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise fail(f"unknown field '{name}'{hint}; fields are {', '.join(FIELDS)}")
    kind = entry.get("type")
    if kind not in TYPES:
        raise fail(f"type {kind!r} is not one of {', '.join(TYPES)}")
    schema = _schema_kind(key)
    if kind == "choice":
        values = entry.get("values")
        if "values" not in entry:
            raise fail("choice needs 'values'")
        if not isinstance(values, list) or not values:
            raise fail("choice needs a non-empty list of values")
        if any(name in entry for name in ("low", "high", "step")):
            raise fail("choice takes 'values' only, not low/high/step")
        for value in values:
            if value is not None and not isinstance(value, bool | int | float | str):
                raise fail(f"choice value {value!r} is not a scalar (None, bool, int, float or str)")
            _check_schema(key, "choice", value, fail)
        if len({repr(v) for v in values}) < len(values):
            raise fail("choice values repeat")
        return Knob(key, "choice", values=tuple(values))

    if "values" in entry:
        raise fail(f"{kind} takes low/high, not 'values'")
    if schema not in _FITS[kind]:
        hint = " (use type int)" if schema == "int" else " (use type choice)" if schema != "list" else ""
        article = "an" if schema[0] in "aeiou" else "a"
        raise fail(f"type {kind} does not fit {article} {schema} key{hint}")
    numbers = {}
    for name in ("low", "high", "step"):
        if name not in entry:
            if name == "step":
                continue
            raise fail(f"{kind} needs '{name}'")
        numbers[name] = _number(entry[name], kind == "int", lambda m, n=name: fail(f"{n}: {m}"))
    low, high, step = numbers["low"], numbers["high"], numbers.get("step")
    if low >= high:
        raise fail(f"low {low!r} must be below high {high!r}")
    if kind == "loguniform" and low <= 0:
        raise fail(f"loguniform needs low > 0, got {low!r}")
    if step is not None:
        if kind == "loguniform":
            raise fail("loguniform takes no step")
        if step <= 0 or not _on_grid((high - low) / step):
            raise fail(f"step {step!r} must be positive and divide high - low = {high - low!r}")
    _check_schema(key, "low", low, fail)
    _check_schema(key, "high", high, fail)
    return Knob(key, kind, low=low, high=high, step=step)


def _number(value: Any, integer: bool, fail: Any) -> float | int:
    # PyYAML reads 5e-4 (no dot) as a string; accept it as the number it plainly is.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise fail(f"{value!r} is not a number") from None
    if not _is_number(value) or not math.isfinite(value):
        raise fail(f"{value!r} is not a finite number")
    if integer:
        if value != int(value):
            raise fail(f"{value!r} is not an integer")
        return int(value)
    return float(value)


def _check_schema(key: str, what: str, value: Any, fail: Any) -> None:
    try:
        apply_flat(RunConfig(), {key: value}, where="schema")
    except ConfigError as exc:
        reason = str(exc).split(": ", 1)[-1].removeprefix(f"'{key}' = {value!r}: ")
        raise fail(f"{what} {value!r} is refused by the schema: {reason}") from None


def _schema_kind(key: str) -> str:
    """'bool', 'int', 'float', 'str', 'list' or 'other': what the schema's field at key holds."""
    model: type[BaseModel] = RunConfig
    *sections, leaf = key.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    annotation = model.model_fields[leaf].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "str" if all(isinstance(a, str) for a in typing.get_args(annotation)) else "other"
    if origin is list or annotation is list:
        return "list"
    for kind in (bool, int, float, str):  # bool before int: bool is an int subclass
        if annotation is kind:
            return kind.__name__
    return "other"
