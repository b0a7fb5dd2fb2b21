"""Orbax checkpoints in ``workdir/checkpoints``: save every N steps and at the end, keep the last K,
asynchronous writes, restore the latest complete checkpoint with its metadata (data position, config).

Orbax writes each step into a temporary directory and renames it when complete, so a write cut off by a
crash or SIGKILL never looks like a checkpoint: it is skipped (with a log line) and the previous one is
restored. A checkpoint whose array shapes differ from the model is refused with the first mismatched
parameter named.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger("jaxdiff.checkpoint")


def _drop_empty(sd):
    """A state dict without its empty top-level fields (no post-hoc EMAs tracked): they hold no arrays, are
    neither written nor read, and are filled back on restore (so checkpoints from before such a field exist
    restore too)."""
    return {k: v for k, v in sd.items() if not (isinstance(v, dict) and not v)} if isinstance(sd, dict) else sd


class CheckpointMismatchError(ValueError):
    pass


def _flat_shapes(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): tuple(np.shape(v)) for p, v in flat}


def check_writable(directory: str):
    """An error in seconds, naming the directory, when checkpoints could not be written there (instead of
    a failed save and an Orbax timeout after training)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_check_"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write checkpoints into {directory} ({e}); make it writable or use another "
                              "--workdir") from None


def check_space(directory: str, step: int, state: Any, last: Optional[int]):
    """Refuse, before Orbax starts writing, a checkpoint the disk has no room for (its arrays' bytes and a
    margin): one error naming the directory and both figures, instead of a full disk found by Orbax's background
    writers (hundreds of lines of their tracebacks, and a half-written temporary directory)."""
    import shutil

    from jaxdiff.errors import EnvironmentFailure

    need = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(state)
               if hasattr(x, "shape") and hasattr(x, "dtype"))
    need = int(need * 1.05) + (1 << 20)  # Orbax's metadata and the meta JSON
    free = shutil.disk_usage(directory).free
    if free < need:
        then = f"training resumes from checkpoint {last}" if last is not None else "training starts again"
        raise EnvironmentFailure(
            f"no space for checkpoint {step} in {directory}: it needs about {need / 2**20:.1f} MiB and the device "
            f"has {free / 2**20:.1f} MiB free; free space there (or keep fewer checkpoints: train.keep_checkpoints, "
            f"or use another --workdir) and run the same command again: {then}")


class Checkpointer:
    """A thin layer over ``ocp.CheckpointManager`` holding a TrainState and a JSON metadata dict."""

    def __init__(self, directory: str, *, save_every: int = 1000, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        """``read_only``: only restore (a workdir on read-only storage samples and evaluates); nothing is
        created or checked for writing."""
        self.directory = os.path.abspath(directory)
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
            check_writable(self.directory)
        self.save_every = save_every
        self.unreadable: set[int] = set()  # steps found unreadable by restore: replaced when saved again
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                               enable_async_checkpointing=async_save and not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._report_incomplete()

    def _report_incomplete(self):
        tmp = [d for d in os.listdir(self.directory) if "tmp" in d]
        for d in tmp:
            log.warning("ignoring incomplete checkpoint %s (a write was cut off); the latest complete "
                        "checkpoint is restored instead", os.path.join(self.directory, d))

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
        if not force and step % self.save_every:
            return False
        if step in self.manager.all_steps():
            if step not in self.unreadable:
                return False
            log.warning("replacing the unreadable checkpoint %d in %s", step, self.directory)
            self.manager.delete(step)
            self.unreadable.discard(step)
        sharded = any(isinstance(x, jax.Array) and not x.is_fully_addressable
                      for x in jax.tree_util.tree_leaves(state))
        # Sharded global arrays are written by all processes together (each its own shards); one-host
        # states are copied to host first (the step donates their device buffers).
        check_space(self.directory, step, state, self.latest_step())
        state_dict = _drop_empty(flax.serialization.to_state_dict(state if sharded else jax.device_get(state)))
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self):
        self.manager.wait_until_finished()

    def restore(self, target: Any, step: Optional[int] = None) -> tuple[Any, dict, int]:
        """Restore ``step`` (default: the latest complete one) into the structure of ``target``.

        Returns ``(state, meta, step)``. Raises CheckpointMismatchError naming the first parameter whose
        shape differs from ``target``, FileNotFoundError when there is no checkpoint."""
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        errors = []
        for s in steps:
            abstract = self._abstract(target, s)  # raises CheckpointMismatchError
            try:
                restored = self.manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            except Exception as e:  # an unreadable checkpoint: fall back to the previous one
                log.warning("checkpoint %d in %s is unreadable (%s); trying the previous one", s,
                            self.directory, e)
                self.unreadable.add(s)
                errors.append(e)
                continue
            self._check_shapes(target, restored["state"], s)
            restored_sd = restored["state"]
            if isinstance(restored_sd, dict):  # empty fields (e.g. no post-hoc EMAs), whether saved or not
                sd = flax.serialization.to_state_dict(target)
                restored_sd = {**{k: v for k, v in sd.items() if isinstance(v, dict) and not v}, **restored_sd}
            state = flax.serialization.from_state_dict(target, restored_sd)
            return state, dict(restored["meta"]), s
        from jaxdiff.errors import EnvironmentFailure

        raise EnvironmentFailure(
            f"no readable checkpoint in {self.directory} (steps {steps}: {errors}); they were cut short or damaged: "
            "restore them from a copy, or move them away to train from the start (nothing is deleted for you)")

    def _abstract(self, target, step):
        """The restore target: the target's shapes with its shardings (every process reads its own shards),
        so a checkpoint reads back whatever the topology that wrote it. A shape that differs from the
        checkpoint's is reported with the parameter named, before reading."""
        have = self._shapes_on_disk(step)
        if have:
            self._check_shapes(target, have, step)
        sd = flax.serialization.to_state_dict(target)
        sd = _drop_empty(sd)
        flat, tree = jax.tree_util.tree_flatten_with_path(sd)
        out = []
        for path, x in flat:
            # A sharded target's own sharding (each process reads its shards), else host numpy arrays: a
            # checkpoint written by many processes reads back on one host, and vice versa.
            if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
                out.append(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding))
            else:
                out.append(np.empty(np.shape(x), np.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype))
        return jax.tree_util.tree_unflatten(tree, out)

    def _shapes_on_disk(self, step) -> dict:
        """The checkpoint's array shapes by name, as a nested dict like the state's (from its metadata)."""
        try:
            meta = self.manager.item_metadata(step)["state"]
            return jax.tree_util.tree_map(lambda v: np.empty(tuple(v.shape), np.int8) if hasattr(v, "shape")
                                          else v, meta, is_leaf=lambda v: hasattr(v, "shape"))
        except Exception:  # metadata layout differs across orbax versions: skip the early check
            return {}

    def _check_shapes(self, target, restored_dict, step):
        want = _flat_shapes(flax.serialization.to_state_dict(target))
        have = _flat_shapes(restored_dict)
        # Report the model's own params before their EMA / optimizer copies.
        for name, shape in sorted(want.items(), key=lambda kv: not kv[0].startswith("['params']")):
            if name not in have:
                raise CheckpointMismatchError(
                    f"checkpoint {step} in {self.directory} has no entry {name} that the model needs "
                    "(was it written by another model config?)")
            if have[name] != shape:
                raise CheckpointMismatchError(
                    f"checkpoint {step} in {self.directory} does not match the model: parameter {name} "
                    f"has shape {have[name]} in the checkpoint but {shape} in the model")

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
