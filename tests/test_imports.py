import ast
import subprocess
import sys
from pathlib import Path


def loaded_in_fresh_interpreter(modules: str, watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` are in sys.modules after a fresh interpreter imports `modules` (comma-separated)."""
    code = f"import sys, {modules}; print(','.join(m for m in {watched!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_rlan_pulls_in_neither_ray_nor_mlflow():
    modules = "rlan, rlan.config, rlan.data, rlan.model, rlan.losses"
    assert loaded_in_fresh_interpreter(modules, ("ray", "mlflow", "optuna")) == []


def test_the_cli_and_config_loading_import_no_torch():
    # `rlan --help` and a malformed config answer before torch loads (its import is ~1 s on 2 cores).
    assert loaded_in_fresh_interpreter("orchestrator.cli, rlan.config", ("torch",)) == []


def test_the_modules_a_trial_and_its_train_workers_import_load_no_mlflow_or_optuna():
    # Every trial's process imports the trial driver, and every Ray Train worker the worker loop, before
    # training starts (MLflow's import is ~1 s on 2 cores).
    modules = "orchestrator.sweeps.trial_driver, orchestrator.runs.train_worker"
    assert loaded_in_fresh_interpreter(modules, ("mlflow", "optuna")) == []


# ------------------------------------------------------------------------------------------ the house rules
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rlan", "orchestrator")
MAX_MODULE_LINES = 300


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (type-only imports included: they still tie the modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)  # a package's __init__ imported on the way down is not an edge back
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [node, nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, node] if nxt else stack)
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, cycles


def test_no_module_is_longer_than_300_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_rlan_never_imports_ray_or_mlflow():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("rlan"):
            tree = ast.parse(path.read_text())
            roots = {
                a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
            }
            roots |= {
                n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            }
            assert not roots & {"ray", "mlflow", "optuna"}, name
