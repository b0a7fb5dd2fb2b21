#!/bin/bash
# The accelerator run behind the README's forecasting and audio figures (#10): settings of the series model
# chosen on a validation split by time, then the same settings scored on the test part.
#
# Eight series models in parallel on one GPU: {class-conditional, one model for all series} x {4000, 10000
# steps} x {validation data (32_8_val: each series' training part, its last 20% held out), full data (32_8)},
# each forecast with 100 samples by DDPM 50 steps RePaint r=2 and DDPM 100 steps r=5; beside them a longer
# audio run, sampled to WAV + spectrograms. Data travel as .npz exports (no TFDS needed there), made here if
# missing. Each chain is cut at LIM seconds.
#
#   DATA=.gpu OUT=/tmp/out LIM=420 bash benchmarks/gpu_forecast.sh      # SMOKE=1: the same with smoke configs
set -u
DATA=${DATA:-.gpu}; mkdir -p $DATA; DATA=$(cd $DATA && pwd)
PY=${PY:-python3}
for cfg in 32_8 32_8_val; do
  [ -f $DATA/series$cfg.npz ] || $PY -c "from jaxdiff.data import export_arrays; export_arrays('series', '$DATA/series$cfg.npz', config='$cfg')"
done
SMOKE=${SMOKE:-0}; V=""; [ "$SMOKE" = 1 ] && V=":smoke"
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
R=${RUNS:-runs}; LIM=${LIM:-420}
export JAXDIFF_DATA_DIR=${JAXDIFF_DATA_DIR:-/tmp/jd_data} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
LOGS=/tmp/gpu_logs; mkdir -p $LOGS
series() {  # series <name> <data config> <label flags> <steps>
  local wd=$R/fc_$1 n=$4 ns=100 r5="--num_steps 100 --resample 5"
  [ "$SMOKE" = 1 ] && n=4 && ns=4 && r5="--num_steps 4 --resample 3"
  $PY -m experiments.train --config experiments/configs/series_ddpm.py$V --workdir $wd \
    --config.data.name=arrays --config.data.config=$DATA/series$2.npz $3 \
    --config.train.num_steps=$n --config.optim.decay_steps=$n --config.train.checkpoint_every=$n \
    --config.train.sample_every=$n || return 1
  $PY -m experiments.forecast --workdir $wd --num_samples $ns || return 1
  $PY -m experiments.forecast --workdir $wd --num_samples $ns $r5
}
audio() {
  local n=15000; [ "$SMOKE" = 1 ] && n=6
  $PY -m experiments.train --config experiments/configs/audio_ddpm.py$V --workdir $R/audio_long \
    --config.train.num_steps=$n --config.optim.decay_steps=$n --config.optim.batch_size=64 \
    --config.train.checkpoint_every=$n --config.train.sample_every=$n || return 1
  $PY -m experiments.sample --workdir $R/audio_long
}
export -f series audio; export PY R DATA SMOKE V
t0=$(date +%s); pids=()
COND=""; GLOBAL="--config.data.use_labels=False --config.model.num_classes=0"
for split in val full; do
  d=32_8; [ $split = val ] && d=32_8_val
  for steps in 4000 10000; do
    timeout $LIM bash -c "series ${split}_cond_$steps $d '$COND' $steps" > $LOGS/${split}_cond_$steps.log 2>&1 & pids+=($!)
    timeout $LIM bash -c "series ${split}_global_$steps $d '$GLOBAL' $steps" > $LOGS/${split}_global_$steps.log 2>&1 & pids+=($!)
  done
done
timeout $LIM bash -c audio > $LOGS/audio.log 2>&1 & pids+=($!)
for p in "${pids[@]}"; do wait $p; echo "pid $p rc=$? $(( $(date +%s) - t0 ))s"; done
(for f in $LOGS/*.log; do echo "== $f"; grep -v "^W\|^I1\|WARNING\|tfevents" $f | tail -c 1500; done) > $OUT/logs.txt
(for f in $R/fc_*/eval/*.md; do echo "== $f"; cat $f; done
 echo "== summaries"
 for f in $R/fc_*/eval/*.json; do $PY -c "
import json, sys; r = json.load(open('$f'))
print('$f', {k: r[k] for k in ('step', 'data', 'labels', 'num_steps', 'resample', 'seconds', 'crps_ratio_ar', 'beats_ar_crps', 'beats_naive_crps')})"; done
) > $OUT/results.txt 2>&1
cat $OUT/results.txt
$PY - <<'PY'
import glob, os, shutil
out = os.environ.get("OUT", "/tmp/out"); R = os.environ.get("RUNS", "runs")
for pat, name in (("audio_long/samples/*_spectrograms.png", "audio_spectrograms.png"),
                  ("audio_long/samples/*_0.wav", "audio_sample_0.wav"), ("audio_long/samples/*_1.wav", "audio_sample_1.wav")):
    g = sorted(glob.glob(f"{R}/{pat}"))
    if g: shutil.copy(g[-1], f"{out}/{name}")
PY
echo total $(( $(date +%s) - t0 ))s
