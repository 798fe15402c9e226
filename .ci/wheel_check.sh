#!/usr/bin/env bash
# The package runs outside its source tree: build the wheel, install it (without
# dependencies) into a scratch venv that reuses the project venv's pinned packages,
# and run `hwnas --help`, the tiny experiment, `python -m hwnas.export` and `hwnas
# reproduce` from an empty folder under /tmp. Used by .ci/run (`make wheel-check`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-$root/.venv/bin/python}
scratch=$(mktemp -d /tmp/hwnas-wheel.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
"$py" -m pip wheel --no-deps --no-build-isolation -q -w "$scratch/dist" "$root"
rm -rf "$root/build"  # setuptools' staging folder
site=$("$py" -c 'import site; print(site.getsitepackages()[0])')
"$py" -m venv "$scratch/venv"
# the scratch venv sees the project venv's packages (torch & co, pinned) through a .pth
# file; hwnas itself comes only from the wheel
echo "$site" > "$("$scratch/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/project-deps.pth"
"$scratch/venv/bin/python" -m pip install --no-deps -q "$scratch"/dist/hwnas-*.whl
launch="$scratch/launch"  # an empty folder outside the source tree, to launch from
mkdir -p "$launch"
cd "$launch"
where=$("$scratch/venv/bin/python" -c 'import hwnas, pathlib; print(pathlib.Path(hwnas.__file__).parent)')
case "$where" in "$root"*) echo "wheel check: hwnas imported from the source tree ($where)"; exit 1;; esac
"$scratch/venv/bin/hwnas" --help > /dev/null
"$scratch/venv/bin/hwnas" experiment=synthetic_tiny threads=1 \
  hydra.run.dir="$scratch/run" paths.cache_dir="$scratch/cache" paths.data_dir="$scratch/data" > "$scratch/log.txt" 2>&1 \
  || { tail -20 "$scratch/log.txt"; exit 1; }
test -f "$scratch/run/final/DONE.json"
test -f "$scratch/run/final/card.md"
# a front point of the finished run, exported with its card, from the installed package
"$scratch/venv/bin/python" -m hwnas.export run_dir="$scratch/run" pick=fastest threads=1 \
  > "$scratch/export.txt" 2>&1 || { tail -20 "$scratch/export.txt"; exit 1; }
test -f "$scratch/run/export/fastest/index.md"
# the console script reruns the finished run from its record and finds it equal
"$scratch/venv/bin/hwnas" reproduce "$scratch/run" hydra.run.dir="$scratch/again" \
  > "$scratch/reproduce.txt" 2>&1 || { tail -20 "$scratch/reproduce.txt"; exit 1; }
grep -q "equal" "$scratch/reproduce.txt" || { tail -20 "$scratch/reproduce.txt"; exit 1; }
if [ -n "$(ls -A "$launch")" ]; then
  echo "wheel check: the run wrote into its launch folder: $(ls -A "$launch")"; exit 1
fi
echo "wheel check: hwnas from $where ran --help, experiment=synthetic_tiny, hwnas.export and hwnas reproduce outside the source tree"
