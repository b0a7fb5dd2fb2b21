#!/usr/bin/env bash
# Time the README's first command on a fresh clone: venv, install, train the default experiment.
#   bash benchmarks/time_main_job.sh [CLONE_DIR]      -> benchmarks/results/main_job_time.txt
# Then `python benchmarks/main_job.py --workdir CLONE_DIR/runs/digits` evaluates the trained model.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-/tmp/jaxdiff_fresh}"
rm -rf "$dir"
git clone -q "$repo" "$dir"
cd "$dir"
start=$(date +%s)
python3.11 -m venv .venv && . .venv/bin/activate && pip install -q -e . \
  && python -m experiments.train --config experiments/configs/digits_ddpm.py --workdir runs/digits 2> train.log
end=$(date +%s)
out="$repo/benchmarks/results/main_job_time.txt"
{
  echo "Main job from a fresh clone (bash benchmarks/time_main_job.sh): the README's first command"
  echo "date $(date -u +%Y-%m-%d' '%H:%M) UTC; commit $(git rev-parse --short HEAD); $(nproc) CPU cores; $(python --version)"
  echo "jax $(python -c 'import jax; print(jax.__version__)'), flax $(python -c 'import flax; print(flax.__version__)')"
  echo "wall seconds (venv + install + train 4000 steps + grids + checkpoints): $((end - start))"
  grep -o "sps=[0-9.]*" train.log | tail -1 | sed 's/sps=/last logged steps per second: /'
} > "$out"
cat "$out"
