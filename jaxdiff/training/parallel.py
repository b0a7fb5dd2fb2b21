"""Many devices and many hosts: ``jax.distributed`` start-up, the device mesh, FSDP-style sharding of the
training state, and global batches from per-process input.

Two compile paths share one ``train_step`` (:func:`jaxdiff.training.step.make_train_step`):

* ``pmap``: params replicated per local device, gradients averaged by ``lax.pmean`` over ``"batch"``;
* ``mesh``: ``jax.jit`` over a ``Mesh(("data", "fsdp"))`` on global arrays (``axis_name=None``; the
  compiler inserts the reductions). The batch is split over every device; with ``fsdp > 1`` each
  parameter (and its Adam moments and EMA copy) is split along its largest dimension divisible by the
  ``fsdp`` axis size, so one device holds ~1/fsdp of the state (ZeRO-3 / FSDP; parameters are gathered
  per layer when used). Small tensors stay replicated.

Every process runs the same script; process ``p`` reads rows ``[p B/P, (p+1) B/P)`` of each global batch
(:class:`jaxdiff.data.pipeline.Pipeline`), and ``jax.make_array_from_process_local_data`` assembles the global
array.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger("jaxdiff.parallel")

MODES = ("auto", "jit", "pmap", "mesh")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, heartbeat_timeout_s: int = 100,
               initialization_timeout_s: int = 300, shutdown_timeout_s: int = 60,
               cpu_collectives: str = "gloo") -> bool:
    """Start JAX's multi-controller runtime (every process calls this first with the same address).

    Arguments come from the caller (a config) or from the environment: ``JAXDIFF_COORDINATOR`` (host:port),
    ``JAXDIFF_NUM_PROCESSES``, ``JAXDIFF_PROCESS_ID``. With none of them set, a TPU VM slice or a SLURM /
    Open MPI job is detected by JAX itself only when ``coordinator_address="auto"``; otherwise this is a
    single-process run and nothing happens (returns False).

    ``heartbeat_timeout_s`` bounds how long the others wait when a process dies: the coordination service
    then stops every process with an error instead of letting collectives hang.
    """
    addr = coordinator_address or os.environ.get("JAXDIFF_COORDINATOR")
    n = num_processes if num_processes is not None else _env_int("JAXDIFF_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int("JAXDIFF_PROCESS_ID")
    if not addr:
        if n not in (None, 1):
            raise ValueError(f"num_processes={n} needs a coordinator address (host:port)")
        return False
    if _initialized():
        return True
    if cpu_collectives:  # CPU devices' cross-process collectives (no effect on GPU / TPU devices)
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    kw = dict(initialization_timeout=initialization_timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s,
              shutdown_timeout_seconds=shutdown_timeout_s)
    if addr == "auto":  # TPU VM slices, SLURM, Open MPI: JAX finds everything
        jax.distributed.initialize(**kw)
    else:
        if n is None or pid is None:
            raise ValueError("a coordinator address needs num_processes and process_id (or "
                             "JAXDIFF_NUM_PROCESSES / JAXDIFF_PROCESS_ID)")
        if not 0 <= pid < n:
            raise ValueError(f"process_id={pid} must lie in 0..{n - 1}")
        jax.distributed.initialize(addr, n, pid, **kw)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


def _env_int(name):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def _initialized() -> bool:
    try:
        from jax._src import distributed

        return distributed.global_state.client is not None
    except Exception:  # pragma: no cover - private API moved
        return False


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
    """A ``("data", "fsdp")`` mesh over all devices (of all processes), ordered by process so that each
    process's devices hold a contiguous block of the batch. ``data = -1``: all devices not in fsdp."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"fsdp={fsdp} must divide the {n} devices")
    if data == -1:
        data = n // fsdp
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} must equal the {n} devices")
    return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape, axis_size: int, min_size: int = 2**10) -> P:
    """Shard the largest dimension divisible by ``axis_size`` over ``"fsdp"`` (tensors smaller than
    ``min_size`` elements, or with no such dimension, stay replicated)."""
    if axis_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    dims = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in dims:
        if shape[i] % axis_size == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(state: Any, mesh: Mesh, min_size: int = 2**10) -> Any:
    """NamedShardings for every leaf of a TrainState (params, EMA, optimizer moments alike)."""
    size = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), size, min_size)), state)


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """Assemble global arrays from this process's rows of the batch."""
    return jax.tree_util.tree_map(lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)),
                                  local)


def to_host(x) -> np.ndarray:
    """A global array (possibly spread over processes) as one numpy array on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def bytes_per_device(tree) -> dict:
    """Bytes of ``tree``'s arrays held by each local device (to check FSDP's 1/n)."""
    out: dict = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array):
            for s in leaf.addressable_shards:
                out[s.device] = out.get(s.device, 0) + s.data.nbytes
    return out
