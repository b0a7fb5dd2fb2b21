"""How the training loop runs a step: :class:`Runner` (the compiled step of one parallel mode -- jit, pmap or
jit over a mesh -- its ahead-of-time pre-flight, how to feed it and read its state back) and :class:`SkipWatch`
(the stop after too many skipped steps)."""

from __future__ import annotations

import logging
import time

import jax
import numpy as np

from jaxdiff.training import parallel

log = logging.getLogger("jaxdiff.train")


def _replicate(tree, n):
    """One copy per local device for pmap (from host or any single device: a restored state is committed
    to one device)."""
    return jax.tree_util.tree_map(lambda a: np.broadcast_to(np.asarray(a), (n,) + np.shape(a)), tree)


def _unreplicate(tree):
    return jax.tree_util.tree_map(lambda a: a[0], tree)


class Runner:
    """The compiled step of one parallel mode, with how to feed it and read its state back."""

    def __init__(self, mode: str, step_fn, make_state, k: int, config):
        self.mode, self.k, self.n_dev = mode, k, jax.local_device_count()
        if mode == "mesh":  # jit over a Mesh on global arrays, FSDP-sharded state
            mesh = parallel.make_mesh(config.parallel.data, config.parallel.fsdp)
            state_sh = parallel.state_shardings(jax.eval_shape(make_state), mesh)
            self.make_state = lambda: jax.jit(make_state, out_shardings=state_sh)()
            spec = jax.sharding.PartitionSpec(None, ("data", "fsdp")) if k > 1 else None
            self.b_sh = jax.sharding.NamedSharding(mesh, spec) if spec else parallel.batch_sharding(mesh)
            self.step = jax.jit(step_fn, in_shardings=(state_sh, self.b_sh),
                                out_shardings=(state_sh, parallel.replicated(mesh)), donate_argnums=(0,))
        elif mode == "pmap":
            self.make_state = make_state
            self.step = jax.pmap(step_fn, axis_name="batch", donate_argnums=(0,))
        else:
            self.make_state = make_state
            self.step = jax.jit(step_fn, donate_argnums=(0,))

    def preflight(self, state, batch) -> dict | None:
        """Compile the step ahead of time (``.lower().compile()``), log its memory (XLA's memory analysis:
        arguments, outputs, temporaries, code) before the first step runs, and train with that executable.
        None where the mode (pmap) or the backend gives no analysis."""
        if self.mode == "pmap":
            return None
        t0 = time.time()
        compiled = self.step.lower(state, batch).compile()
        self.step = compiled
        m = compiled.memory_analysis()
        if m is None:
            return None
        mib = {k: getattr(m, f"{k}_size_in_bytes", 0) / 2**20
               for k in ("argument", "output", "alias", "temp", "generated_code")}
        log.info("train step compiled in %.1f s; memory per device (MiB): arguments %.1f, outputs %.1f (aliased "
                 "%.1f), temporaries %.1f, code %.1f", time.time() - t0, mib["argument"], mib["output"],
                 mib["alias"], mib["temp"], mib["generated_code"])
        return mib

    def place(self, state):
        return _replicate(state, self.n_dev) if self.mode == "pmap" else state

    def host(self, tree):
        return _unreplicate(tree) if self.mode == "pmap" else tree

    def feed(self, batches: list[dict]):
        b = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches) if self.k > 1 else batches[0]
        if self.mode == "pmap":  # [k?, B, ...] -> [dev, k?, B/dev, ...]
            ax = 1 if self.k > 1 else 0
            b = jax.tree_util.tree_map(
                lambda v: np.moveaxis(v.reshape(v.shape[:ax] + (self.n_dev, -1) + v.shape[ax + 1:]), ax, 0), b)
        elif self.mode == "mesh":  # this process's rows -> global arrays
            b = parallel.global_batch(b, self.b_sh)
        return b


class SkipWatch:
    """Counts consecutive skipped steps from each step's ``finite`` flag without a device sync per step: the
    flags are read in one transfer every ``limit`` steps (and at log steps), and a run of ``limit`` skipped
    steps stops training with an error (the checkpoints hold the last good parameters: a skipped step
    changes nothing)."""

    def __init__(self, limit: int, k: int):
        self.limit, self.k, self.flags, self.run = int(limit), k, [], 0

    def add(self, finite, step: int, flush: bool = False):
        if not self.limit:
            return
        self.flags.append(finite)
        if not flush and len(self.flags) * self.k < self.limit:
            return
        for f in jax.device_get(self.flags):
            self.run = 0 if float(f) > 0.5 else self.run + self.k
        self.flags = []
        if self.run >= self.limit:
            raise FloatingPointError(
                f"training stopped at step {step}: the last {self.run} steps were all skipped for a non-finite "
                f"loss, gradient or update (train.max_consecutive_skipped={self.limit}); the checkpoints keep the "
                "last good parameters. Lower optim.learning_rate, check the data, or raise the limit (0 = never).")
