"""A training workdir: its stored config (checked against a resumed run, migrated from older layouts) and
its checkpoints (restored into a state's structure).

Layout: ``workdir/config.json`` (the complete config, every declared field), ``workdir/checkpoints/<step>``
(Orbax), ``workdir/samples/`` (grids), ``workdir/eval/`` (metrics; never overwritten).
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections

from jaxdiff.errors import EnvironmentFailure
from jaxdiff.training.checkpoint import Checkpointer
from jaxdiff.training.schema import _paths, check_config, fill_defaults

log = logging.getLogger("jaxdiff.train")

# Fields that may change between a run and its resumption (everything else must match).
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "train.sample_every", "sample", "eval", "forecast",
                    "parallel")


def config_path(workdir: str) -> str:
    return os.path.join(workdir, "config.json")


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The workdir's config with every declared field (older workdirs: defaults filled in, ``kind`` read
    as ``task``, a classifier's ``num_classes`` as ``classifier.num_classes``)."""
    path = config_path(workdir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no config.json: is it a jaxdiff training workdir?")
    try:
        with open(path) as f:
            stored = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EnvironmentFailure(f"{path} is not a readable config ({e}); it was cut off or edited: restore it "
                                 "from a copy, or train in a new --workdir") from None
    try:
        return fill_defaults(stored)
    except ValueError as e:
        raise ValueError(f"{path}: {e}. It was written by another jaxdiff version: remove or rename that field "
                         "in config.json to migrate the workdir") from e


def check_workdir(config, workdir: str):
    """Refuse to continue a workdir that holds a run of a different config (never overwrite silently).
    Writes nothing: :func:`write_config` stores the config once the run has passed every check."""
    check_config(config)
    if os.path.exists(config_path(workdir)):
        new = json.loads(config.to_json_best_effort())
        a, b = _paths(load_config(workdir).to_dict()), _paths(fill_defaults(new).to_dict())
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                      and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_FIELDS))
        if diff:
            raise ValueError(f"workdir {workdir} holds a run with a different config (fields {diff}); "
                             "use a new --workdir, or the same config to resume it")


def write_config(config, workdir: str):
    """The complete config into ``workdir/config.json`` (process 0), written whole: to a temporary name in the
    same directory, then renamed over the old one."""
    if jax.process_index() > 0:
        return
    path = config_path(workdir)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(json.loads(config.to_json_best_effort()), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def listing(workdir: str):
    """What a workdir holds before a run starts: ``None`` when it does not exist, else its entries and its
    checkpoint steps (:func:`undo_failed_start` puts it back). A link to nothing is an error naming its target."""
    if os.path.islink(workdir) and not os.path.exists(workdir):
        raise EnvironmentFailure(f"workdir {workdir} is a link to {os.readlink(workdir)}, which does not exist; "
                                 "create the target directory or pass another --workdir")
    if not os.path.isdir(workdir):
        return None
    ckpt = checkpoint_dir(workdir)
    steps = {d for d in os.listdir(ckpt) if d.isdigit()} if os.path.isdir(ckpt) else set()
    return {"entries": set(os.listdir(workdir)), "steps": steps}


def undo_failed_start(workdir: str, found) -> bool:
    """After a run failed: when it wrote no checkpoint, remove what it added to the workdir (and the workdir
    itself when it made it), so the corrected command starts clean. Returns whether anything was removed;
    a run that checkpointed is kept (it resumes)."""
    import shutil

    if not os.path.isdir(workdir):
        return False
    before = found or {"entries": set(), "steps": set()}
    ckpt = checkpoint_dir(workdir)
    steps = {d for d in os.listdir(ckpt) if d.isdigit()} if os.path.isdir(ckpt) else set()
    if steps - before["steps"]:
        return False
    added = sorted(set(os.listdir(workdir)) - before["entries"])
    for name in added:
        path = os.path.join(workdir, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    if found is None and not os.listdir(workdir):
        os.rmdir(workdir)
    return bool(added) or found is None


def restore_state(workdir: str, template, step: int | None = None):
    """``(state, meta, step)``: a state of ``template``'s structure restored from the workdir's latest (or
    given) checkpoint; FileNotFoundError naming the workdir when it has none."""
    ckpt_dir = checkpoint_dir(workdir)
    if not os.path.isdir(ckpt_dir) or not os.listdir(ckpt_dir):
        raise FileNotFoundError(f"no checkpoint in {ckpt_dir}: train first with experiments.train "
                                f"--workdir {workdir}")
    ckpt = Checkpointer(ckpt_dir, async_save=False, read_only=True)  # reads only: read-only storage works
    try:
        return ckpt.restore(template, step)
    finally:
        ckpt.close()


class WorkdirLock:
    """An exclusive lock on a workdir (``workdir/.lock``, ``fcntl.flock``) held by one training process: a
    second trainer on the same workdir is refused with the holder's PID. In a multi-process run process 0
    holds it. Released by ``release()`` or when the process ends (the OS drops flock locks)."""

    def __init__(self, workdir: str):
        import fcntl

        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, ".lock")
        self._f = open(self.path, "a+")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.seek(0)
            holder = self._f.read().strip() or "unknown"
            self._f.close()
            raise RuntimeError(f"workdir {workdir} is in use by another trainer (PID {holder}); wait for it to "
                               "finish or use another --workdir") from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(str(os.getpid()))
        self._f.flush()

    def release(self):
        import fcntl

        if not self._f.closed:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
