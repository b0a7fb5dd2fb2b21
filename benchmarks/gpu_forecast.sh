#!/bin/bash
# The accelerator run behind the README's forecasting and audio figures (#10): settings of the series model
# chosen on a validation split by time, then the same settings scored on the test part.
#
# Series models in parallel on one GPU: KINDS {cond: class-conditional, global: one model for all series} x
# STEPS x SPLITS {val: validation data (32_8_val: each series' training part, its last 20% held out), full:
# the full data (32_8)}, each forecast with 100 samples by DDPM 100 steps RePaint r=5 (the config's) and 50 steps r=2;
# beside them a longer audio run (AUDIO_STEPS, 0 = none), sampled to WAV + spectrograms. Data travel as .npz
# exports (no TFDS needed there), made here if missing. Each chain is cut at LIM seconds. Small models share
# the GPU badly: nine processes trained at 21-36 steps/s each on an H100 (~250 steps/s in all).
#
#   DATA=.gpu OUT=/tmp/out LIM=250 SPLITS=full STEPS=4000 bash benchmarks/gpu_forecast.sh   # SMOKE=1: smoke configs
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
  local wd=$R/fc_$1 n=$4 ns=100 r2="--num_steps 50 --resample 2"
  [ "$SMOKE" = 1 ] && n=4 && ns=4 && r2="--num_steps 4 --resample 1"
  $PY -m experiments.train --config experiments/configs/series_ddpm.py$V --workdir $wd \
    --config.data.name=arrays --config.data.config=$DATA/series$2.npz $3 \
    --config.train.num_steps=$n --config.optim.decay_steps=$n --config.train.checkpoint_every=$n \
    --config.train.sample_every=$n || return 1
  $PY -m experiments.forecast --workdir $wd --num_samples $ns || return 1   # the config's: 100 steps, r=5
  $PY -m experiments.forecast --workdir $wd --num_samples $ns $r2
}
audio() {
  local n=${AUDIO_STEPS:-8000}; [ "$SMOKE" = 1 ] && n=6
  $PY -m experiments.train --config experiments/configs/audio_ddpm.py$V --workdir $R/audio_long \
    --config.train.num_steps=$n --config.optim.decay_steps=$n --config.optim.batch_size=64 \
    --config.train.checkpoint_every=$n --config.train.sample_every=$n || return 1
  $PY -m experiments.sample --workdir $R/audio_long || return 1
  $PY - <<'PY'  # level and tonality of the samples vs training segments
import glob, os, numpy as np
from jaxdiff.data.audio import spectral_flatness
from jaxdiff.training.build import build_pipeline
from jaxdiff.training.workdir import load_config
wd = os.environ.get("R", "runs") + "/audio_long"
x = np.load(sorted(glob.glob(wd + "/samples/ddpm_*.npz"))[-1])["samples"]
t = build_pipeline(load_config(wd), "train", 256).batch(0)["x"]
for name, a in (("samples", x), ("training", t)):
    print(f"audio {name}: n={len(a)} rms={np.sqrt((a ** 2).mean()):.4f} "
          f"median flatness={np.median([spectral_flatness(v) for v in a]):.4g}")
PY
}
export -f series audio; export PY R DATA SMOKE V
t0=$(date +%s); pids=()
COND="--config.data.use_labels=True --config.model.num_classes=6"; GLOBAL=""
for split in ${SPLITS:-val full}; do
  d=32_8; [ $split = val ] && d=32_8_val
  for steps in ${STEPS:-4000}; do
    for kind in ${KINDS:-cond global}; do
      [ $kind = cond ] && flags="$COND" || flags="$GLOBAL"
      timeout $LIM bash -c "series ${split}_${kind}_$steps $d '$flags' $steps" > $LOGS/${split}_${kind}_$steps.log 2>&1 & pids+=($!)
    done
  done
done
[ "${AUDIO_STEPS:-8000}" = 0 ] || { timeout $LIM bash -c audio > $LOGS/audio.log 2>&1 & pids+=($!); }
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
