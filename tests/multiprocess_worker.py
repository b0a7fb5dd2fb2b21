"""One process of a multi-process training run (tests/test_parallel.py starts several): trains the smoke
digits model with SGD on the mesh path for steps/2 steps, checkpoints, restarts from the checkpoint for
the rest, then prints the losses and the gradient at the final params (process 0) as ``RESULT <json>``."""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir")
    ap.add_argument("--data_dir")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--coordinator")
    ap.add_argument("--num_processes", type=int)
    ap.add_argument("--process_id", type=int)
    ap.add_argument("--heartbeat", type=int, default=100)
    ap.add_argument("--checkpoint_every", type=int, default=0)
    a = ap.parse_args()

    from jaxdiff.training import parallel

    if a.num_processes > 1:
        parallel.initialize(a.coordinator, a.num_processes, a.process_id, heartbeat_timeout_s=a.heartbeat,
                            initialization_timeout_s=120)
    import jax
    import jax.numpy as jnp
    import numpy as np

    # The tests' persistent compilation cache: the restarted run (and the other worker) reuse executables.
    jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from test_parallel import sgd_config

    from jaxdiff.training.build import build_model, build_pipeline
    from jaxdiff.training.checkpoint import Checkpointer
    from jaxdiff.training.loop import train_and_evaluate
    from jaxdiff.training.restore import state_template
    from jaxdiff.training.step import example_keys
    from jaxdiff.training.tasks import DIFFUSION
    from jaxdiff.training.tasks.diffusion import make_denoising_loss

    half = a.steps // 2
    c = sgd_config(a.data_dir, "mesh", steps=half, data=-1, fsdp=2)
    c.train.checkpoint_every = a.checkpoint_every or half
    history = train_and_evaluate(c, a.workdir)["history"]
    c.train.num_steps = a.steps  # a new run of the script resumes from the checkpoint at `half`
    history += train_and_evaluate(c, a.workdir)["history"]

    # The gradient at the final params on global batch 0, every process feeding its own rows.
    model, _ = build_model(c)
    mesh = parallel.make_mesh(-1, 2)
    sh = parallel.state_shardings(jax.eval_shape(lambda: state_template(c, DIFFUSION, model)), mesh)
    ck = Checkpointer(os.path.join(a.workdir, "checkpoints"), async_save=False)
    state, _, step = ck.restore(jax.jit(lambda: state_template(c, DIFFUSION, model), out_shardings=sh)())
    ck.close()
    loss_fn = make_denoising_loss(c, model)
    b = build_pipeline(c).batch(0)
    bs = parallel.batch_sharding(mesh)
    batch = parallel.global_batch({"x": b["x"], "index": b["index"]}, bs)
    key = jax.random.PRNGKey(c.seed)

    def grad(p, batch):
        keys = example_keys(key, jnp.int32(0), batch["index"])
        return jax.grad(lambda p: loss_fn(p, batch, keys)[0])(p)

    g = jax.jit(grad, in_shardings=(sh.params, bs), out_shardings=parallel.replicated(mesh))(state.params, batch)
    flat = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(g)])
    norms = {k: float(np.sqrt(sum(float(jnp.sum(x**2)) for x in jax.tree_util.tree_leaves(v))))
             for k, v in g.items()}
    if jax.process_index() == 0:
        print("RESULT " + json.dumps({"history": history, "grad_norms": norms, "grad_sample": flat[::997].tolist(),
                                      "process_count": jax.process_count(), "step": step}), flush=True)


if __name__ == "__main__":
    main()
