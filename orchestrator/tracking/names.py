"""The MLflow names of metric and param keys, and steps written as ranges.

Keys are sanitised by `sanitize_key`, a fixed rule, so a key logged once always maps to the same MLflow name:
  1. '@' becomes '_at_'                      ('eval/pass@2' -> 'eval/pass_at_2')
  2. every character outside A-Z a-z 0-9 _ - . space / becomes '_'
  3. empty path parts are dropped and '.' or '..' parts become '_' (MLflow rejects non-normalised paths),
  4. the result is cut to 250 characters; an empty key becomes '_'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_KEY_LENGTH = 250


def sanitize_key(key: str) -> str:
    """The MLflow name of a metric or param key (the rule is in the module docstring)."""
    text = re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(key).replace("@", "_at_"))
    parts = ["_" if part in (".", "..") else part for part in text.split("/") if part]
    return "/".join(parts)[:MAX_KEY_LENGTH] or "_"


def compact_steps(steps: Iterable[int]) -> str:
    """Sorted steps as ranges: {3, 4, 5, 9} -> '3-5,9'."""
    parts: list[str] = []
    ordered = sorted(set(steps))
    start = prev = None
    for step in [*ordered, None]:
        if step is not None and prev is not None and step == prev + 1:
            prev = step
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = step
    return ",".join(parts)
