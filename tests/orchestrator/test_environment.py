"""The environment settings: one table in code and the same in the README; a malformed number is one line."""

from pathlib import Path

import pytest

from orchestrator.environment import ENV_SETTINGS, check_environment, env_number
from orchestrator.tracking.retries import retry_budget_s
from rlan.config import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_setting_with_its_meaning():
    text = README.read_text()
    for name, (meaning, default, _) in ENV_SETTINGS.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), "").replace(
            "`", ""
        )
        assert meaning in row and default in row, name


def test_numbers_are_read_when_used_and_a_malformed_one_is_refused(monkeypatch):
    monkeypatch.delenv("RLAN_MLFLOW_RETRY_S", raising=False)
    assert retry_budget_s() == 60
    monkeypatch.setenv("RLAN_MLFLOW_RETRY_S", "2.5")
    assert retry_budget_s() == 2.5  # no import-time copy
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("RLAN_MLFLOW_BUFFER_METRICS", bad)
        with pytest.raises(ConfigError, match=f"RLAN_MLFLOW_BUFFER_METRICS='{bad}': expected a number >= 0"):
            check_environment()
    monkeypatch.setenv("RLAN_MLFLOW_BUFFER_METRICS", "10")
    check_environment()
    assert env_number("RLAN_MLFLOW_BUFFER_METRICS") == 10
