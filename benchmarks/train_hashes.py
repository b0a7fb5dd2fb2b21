"""Every training method's smoke config trained for two steps (the autoencoder three, with its discriminator
from step 1), and each run's final EMA params hashed (SHA-256, first 16 hex digits) with its logged losses: run
it on two commits and compare, to show that a refactor changes no number. ``tiny`` trains at base_channels 8
(the pre-change fixtures of ``tests/fixtures/prechange_workdirs/methods`` were written so).

    python benchmarks/train_hashes.py OUT_DIR [tiny]      # OUT_DIR/hashes.json
"""

import hashlib
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=1"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.getcwd())

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import (  # noqa: E402
    digits32_autoencoder,
    digits_cd,
    digits_classifier,
    digits_csdi,
    digits_ddpm,
    digits_edm,
    digits_flow,
    digits_ict,
    digits_v,
    series_csdi,
)
from experiments.distill import round_config  # noqa: E402
from jaxdiff.training.loop import train_and_evaluate  # noqa: E402
from jaxdiff.training.workdir import load_config  # noqa: E402

try:
    from jaxdiff.training.restore import restore  # noqa: E402
except ImportError:  # before the task modules
    from jaxdiff.training.tasks import restore  # noqa: E402

OUT = sys.argv[1]
DATA = os.environ.get("JAXDIFF_DATA_DIR", "/tmp/jd_data")
TINY = len(sys.argv) > 2 and sys.argv[2] == "tiny"
if os.path.exists(OUT):
    sys.exit(f"{OUT} exists; pass a new directory (nothing saved is overwritten)")
os.makedirs(OUT)

def h(wd):
    _, _, params, meta, step = restore(wd)
    leaves = jax.tree_util.tree_leaves(jax.device_get(params))
    return hashlib.sha256(b"".join(np.asarray(l).tobytes() for l in leaves)).hexdigest()[:16], step

def prep(c, steps=2):
    c.data.data_dir = DATA
    c.train.num_steps, c.train.checkpoint_every, c.train.sample_every = steps, steps, steps
    c.train.log_every = 1
    if TINY:
        c.model.base_channels, c.model.num_groups = 8, 4
        c.train.num_grid_samples = 2
    return c

results = {}
def run(name, c):
    wd = os.path.join(OUT, name)
    m = train_and_evaluate(c, wd)
    results[name] = {"hash": h(wd)[0], "loss": m["loss"], "history": m["history"]}
    print(name, results[name], flush=True)
    return wd

run("diffusion", prep(digits_ddpm.get_config("smoke")))
ae = digits32_autoencoder.get_config("smoke")
ae.loss.discriminator, ae.loss.disc_start = True, 1
if TINY:
    ae.model.block_out_channels, ae.model.norm_num_groups = (8, 8), 4
    ae.loss.disc_channels, ae.loss.disc_groups = 8, 4
prep(ae, 3)
run("autoencoder", ae)
run("classifier", prep(digits_classifier.get_config("smoke")))
tv = run("teacher_v", prep(digits_v.get_config("smoke")))
run("distill", prep(round_config(load_config(tv), tv, 2, 2)))
te = run("teacher_edm", prep(digits_edm.get_config("smoke")))
cd = prep(digits_cd.get_config("smoke"))
cd.consistency.teacher = cd.train.init_from = te
run("cd", cd)
run("ct", prep(digits_ict.get_config("smoke")))
run("imputation", prep(digits_csdi.get_config("smoke")))
run("imputation_series", prep(series_csdi.get_config("smoke")))
fl = run("flow", prep(digits_flow.get_config("smoke")))
rng = np.random.default_rng(0)
pairs = os.path.join(OUT, "pairs.npz")
np.savez(pairs, x0=rng.standard_normal((40, 8, 8, 1)).astype(np.float32),
         noise=rng.standard_normal((40, 8, 8, 1)).astype(np.float32))
rf = prep(digits_flow.get_config("smoke,reflow"))
rf.data.pairs, rf.train.init_from = pairs, fl
run("reflow", rf)
json.dump(results, open(os.path.join(OUT, "hashes.json"), "w"), indent=1)
