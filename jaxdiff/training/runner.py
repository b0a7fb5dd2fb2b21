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
    """The compiled step of plain ``jit`` (one device), with how to feed it and read its state back; the other
    parallel modes are subclasses that override what differs (``RUNNERS`` maps ``config.parallel.mode`` to
    them, so the loop never branches on the mode). ``axis_name``: the mapped axis the train step averages its
    gradients over (None where the compiler inserts the collectives)."""

    axis_name = None

    def __init__(self, step_fn, make_state, k: int, config):
        self.k, self.n_dev = k, jax.local_device_count()
        self.make_state = make_state
        self.step = self.compile_step(step_fn, make_state, config)

    def compile_step(self, step_fn, make_state, config):
        return jax.jit(step_fn, donate_argnums=(0,))

    def memory_devices(self) -> int:
        """Devices the state and batch are spread over (CPU devices share the host's memory)."""
        return 1

    def preflight(self, state, batch, batch_size: int | None = None) -> dict | None:
        """Compile the step ahead of time (``.lower().compile()``), log its memory (XLA's memory analysis:
        arguments, outputs, temporaries, code) before the first step runs, refuse a step that cannot fit in the
        device's memory (:func:`check_fits`), and train with that executable. None where the mode (pmap) or
        the backend gives no analysis."""
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
        check_fits(mib, self.memory_devices(), batch_size)
        return mib

    def place(self, state):
        return state

    def host(self, tree):
        return tree

    def stack(self, batches: list[dict]):
        return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches) if self.k > 1 else batches[0]

    def feed(self, batches: list[dict]):
        return self.stack(batches)


class PmapRunner(Runner):
    """``pmap`` over the local devices: a replicated state, the batch split along a leading device axis."""

    axis_name = "batch"

    def compile_step(self, step_fn, make_state, config):
        return jax.pmap(step_fn, axis_name=self.axis_name, donate_argnums=(0,))

    def preflight(self, state, batch, batch_size: int | None = None) -> dict | None:
        return None  # pmap's executables give no ahead-of-time analysis here

    def place(self, state):
        return _replicate(state, self.n_dev)

    def host(self, tree):
        return _unreplicate(tree)

    def feed(self, batches: list[dict]):  # [k?, B, ...] -> [dev, k?, B/dev, ...]
        ax = 1 if self.k > 1 else 0
        return jax.tree_util.tree_map(
            lambda v: np.moveaxis(v.reshape(v.shape[:ax] + (self.n_dev, -1) + v.shape[ax + 1:]), ax, 0),
            self.stack(batches))


class MeshRunner(Runner):
    """``jit`` over a ``Mesh`` on global arrays, the state FSDP-sharded by :func:`parallel.state_shardings`."""

    def compile_step(self, step_fn, make_state, config):
        mesh = parallel.make_mesh(config.parallel.data, config.parallel.fsdp)
        state_sh = parallel.state_shardings(jax.eval_shape(make_state), mesh)
        self.make_state = lambda: jax.jit(make_state, out_shardings=state_sh)()
        spec = jax.sharding.PartitionSpec(None, ("data", "fsdp")) if self.k > 1 else None
        self.b_sh = jax.sharding.NamedSharding(mesh, spec) if spec else parallel.batch_sharding(mesh)
        return jax.jit(step_fn, in_shardings=(state_sh, self.b_sh),
                       out_shardings=(state_sh, parallel.replicated(mesh)), donate_argnums=(0,))

    def memory_devices(self) -> int:
        return jax.local_device_count()

    def feed(self, batches: list[dict]):  # this process's rows -> global arrays
        return parallel.global_batch(self.stack(batches), self.b_sh)


RUNNERS = {"jit": Runner, "pmap": PmapRunner, "mesh": MeshRunner}


def make_runner(mode: str, step_fn, make_state, k: int, config) -> Runner:
    """The runner of ``config.parallel.mode`` (one of ``RUNNERS``)."""
    if mode not in RUNNERS:
        raise ValueError(f"unknown parallel mode {mode!r}; allowed: {sorted(RUNNERS)}")
    return RUNNERS[mode](step_fn, make_state, k, config)


def available_memory(device=None) -> tuple[int | None, str]:
    """Bytes the device can hold and where the figure comes from: an accelerator's ``memory_stats()``
    ``bytes_limit``; on CPU the cgroup's ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1) and the
    host's ``MemAvailable``, whichever is smaller. ``(None, why)`` where nothing says."""
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} memory_stats bytes_limit"
    if device.platform != "cpu":
        return None, "no memory statistics"
    found = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            found.append((int(text), path))
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"))
    except OSError:
        pass
    return min(found) if found else (None, "no memory limit found")


def check_fits(mib: dict, devices: int = 1, batch_size: int | None = None):
    """MemoryError naming the batch size and both figures when the compiled step's memory (arguments +
    outputs - aliased + temporaries + code, per device, times ``devices`` that share one memory) exceeds what
    :func:`available_memory` reports; nothing is checked where it reports nothing."""
    need = (mib["argument"] + mib["output"] - mib["alias"] + mib["temp"] + mib["generated_code"]) * devices
    avail, source = available_memory()
    if avail is None or need * 2**20 <= avail:
        return
    raise MemoryError(f"the compiled train step needs {need:.0f} MiB (temporaries {mib['temp']:.0f} MiB per device"
                      f"{f' x {devices} devices' if devices > 1 else ''}) but {avail / 2**20:.0f} MiB are "
                      f"available ({source}); lower optim.batch_size"
                      f"{f'={batch_size}' if batch_size else ''}, the model size, or use more devices")


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
