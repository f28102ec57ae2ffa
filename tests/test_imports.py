import subprocess
import sys


def test_import_rlan_pulls_in_neither_ray_nor_mlflow():
    code = (
        "import sys, rlan, rlan.config, rlan.data, rlan.model, rlan.losses; "
        "print(sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
