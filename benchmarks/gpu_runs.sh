#!/bin/bash
# The accelerator run behind the README's H200 figures (latent diffusion, forecasting): four chains in
# parallel on one GPU, each cut at LIM seconds: digits32 autoencoder -> its PSNR -> latent diffusion -> FD;
# the pixel baseline -> FD; photos64 autoencoder -> PSNR -> latent diffusion; the series model -> 100-sample
# forecasts (and a 3x longer run). Data travel as .npz exports (no TFDS needed there), made here if missing.
#
#   DATA=.gpu OUT=/tmp/out LIM=300 bash benchmarks/gpu_runs.sh      # SMOKE=1: the same with smoke configs
set -u
DATA=${DATA:-.gpu}; mkdir -p $DATA; DATA=$(cd $DATA && pwd)
for spec in digits:32:digits32 photos:64:photos64 series:32_8:series32_8; do
  IFS=: read -r name cfg file <<< "$spec"
  [ -f $DATA/$file.npz ] || ${PY:-python3} -c "from jaxdiff.data import export_arrays; export_arrays('$name', '$DATA/$file.npz', config='$cfg')"
done
SMOKE=${SMOKE:-0}
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
V=""; [ "${SMOKE:-0}" = 1 ] && V=":smoke"
R=${RUNS:-runs}
export JAXDIFF_DATA_DIR=${JAXDIFF_DATA_DIR:-/tmp/jd_data} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
D32="--config.data.name=arrays --config.data.config=$DATA/digits32.npz"
P64="--config.data.name=arrays --config.data.config=$DATA/photos64.npz"
S32="--config.data.name=arrays --config.data.config=$DATA/series32_8.npz"
RES=/tmp/res; mkdir -p $RES
PY=${PY:-python3}; T="$PY -m experiments.train"; E="$PY -m experiments.evaluate"
chainA() {
  $T --config experiments/configs/digits32_autoencoder.py$V --workdir $R/digits32_ae $D32 || return 1
  $E --workdir $R/digits32_ae > $RES/A_ae32.json || return 1
  $T --config experiments/configs/digits32_ldm.py$V --workdir $R/digits32_ldm $D32 --config.latent.autoencoder=$R/digits32_ae || return 1
  $E --workdir $R/digits32_ldm --sampler dpmpp_2m --num_steps 20 > $RES/A_ldm.json
}
chainB() {
  $T --config experiments/configs/digits32_ddpm.py$V --workdir $R/digits32 $D32 || return 1
  $E --workdir $R/digits32 --sampler dpmpp_2m --num_steps 20 --novlb > $RES/B_pix.json
}
chainC() {
  $T --config experiments/configs/photos64_autoencoder.py$V --workdir $R/photos64_ae $P64 || return 1
  $E --workdir $R/photos64_ae > $RES/C_ae64.json || return 1
  $T --config experiments/configs/photos64_ldm.py$V --workdir $R/photos64_ldm $P64 --config.latent.autoencoder=$R/photos64_ae
}
chainD() {  # forecasting: the README's config (4000 steps) and a 5x longer run; 100 samples per origin
  NS=""; [ "${SMOKE:-0}" = 1 ] && NS="--config.train.num_steps=8 --config.optim.decay_steps=8 --config.train.checkpoint_every=4"
  LONG="--config.train.num_steps=12000 --config.optim.decay_steps=12000 --config.train.checkpoint_every=4000 --config.train.sample_every=12000"
  [ "${SMOKE:-0}" = 1 ] && LONG="$NS"
  $T --config experiments/configs/series_ddpm.py$V --workdir $R/series $S32 || return 1
  $PY -m experiments.forecast --workdir $R/series > /dev/null || return 1
  $T --config experiments/configs/series_ddpm.py$V --workdir $R/series_long $S32 $LONG || return 1
  $PY -m experiments.forecast --workdir $R/series_long > /dev/null
  $PY -m experiments.forecast --workdir $R/series_long --num_steps 100 --resample 5 > /dev/null
}
t0=$(date +%s)
LIM=${LIM:-300}
export OUT V R JAXDIFF_DATA_DIR D32 P64 S32 RES PY T E SMOKE
export -f chainA chainB chainC chainD
timeout $LIM bash -c chainA > /tmp/A.log 2>&1 & a=$!
timeout $LIM bash -c chainB > /tmp/B.log 2>&1 & b=$!
timeout $LIM bash -c chainC > /tmp/C.log 2>&1 & c=$!
timeout $LIM bash -c chainD > /tmp/D.log 2>&1 & d=$!
wait $a; echo "A rc=$? $(( $(date +%s) - t0 ))s"; wait $b; echo "B rc=$? $(( $(date +%s) - t0 ))s"; wait $c; echo "C rc=$? $(( $(date +%s) - t0 ))s"
wait $d; echo "D rc=$? $(( $(date +%s) - t0 ))s"
for f in A B C D; do echo "== $f"; grep -v -i "warn\|tfevents\|absl\|I1126\|^ *$" /tmp/$f.log | grep -i "error\|Trace\|finished\|scale\|Exception" | tail -8; done
(for f in A B C D; do echo "== $f"; tail -c 3000 /tmp/$f.log; done) > $OUT/logs.txt
$PY - <<'PY'
import glob, os, shutil
out = os.environ.get("OUT", "/tmp/out"); R = os.environ.get("RUNS", "runs")
for wd, name in (("digits32_ldm", "ldm32"), ("digits32", "pix32"), ("photos64_ae", "ae64"), ("photos64_ldm", "ldm64")):
    g = sorted(glob.glob(f"{R}/{wd}/samples/grid_*.png"))
    if g: shutil.copy(g[-1], f"{out}/{name}.png")
PY
[ "${SMOKE:-0}" = 1 ] || timeout 100 $PY benchmarks/latent_vs_pixel.py --batch 64 --num_samples 256 --reps 10 > $RES/timing.txt 2>&1
(for f in $RES/*.json; do echo "== $f"; cat $f; done; for f in $R/series*/eval/*.md; do echo "== $f"; cat $f; done
 echo "== timing"; grep -v -i warn $RES/timing.txt) > $OUT/results.txt 2>&1
grep -v '^\s*[\[\]0-9.e-]*,\?$' $OUT/results.txt | grep -v '"fd_ci"\|"fd_floor_ci"\|class_counts\|"options"\|"path"' 
echo total $(( $(date +%s) - t0 ))s
