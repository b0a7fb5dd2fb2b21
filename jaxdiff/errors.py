"""Failures of the environment rather than of the code or of a value given: a damaged data or config file, a
dangling workdir link, a JAX platform that is not there. The command-line apps print them (and a full or
read-only disk) as one line that names the path or setting and what to do; the traceback under ``--verbose``."""

from __future__ import annotations

import errno
import os
import re


class EnvironmentFailure(RuntimeError):
    """A failure of the machine or of files outside the code, with what to do in its message."""


_DISK = {
    errno.ENOSPC: "no space left on the device holding {path}: free space there (or write elsewhere) and run the "
                  "same command again; a training run resumes from its last checkpoint",
    errno.EDQUOT: "the disk quota is used up for {path}: free space (or write elsewhere) and run the same "
                  "command again; a training run resumes from its last checkpoint",
    errno.EROFS: "{path} is on read-only storage: write elsewhere (sample / evaluate: --out; train: another "
                 "--workdir)",
}


def _chain(e: BaseException):
    """``e``, its causes and contexts, and the members of exception groups, each once."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]


def describe(e: BaseException) -> str | None:
    """One line for a known failure of the environment anywhere in ``e``'s chain (an
    :class:`EnvironmentFailure`; a full, over-quota or read-only disk, also where a library reports it only in
    its message, as Orbax's background writers do); ``None`` for anything else."""
    for x in _chain(e):
        if isinstance(x, EnvironmentFailure):
            return str(x)
    for x in _chain(e):
        code = getattr(x, "errno", None)
        if code not in _DISK:
            text = str(x)
            code = next((c for c, word in ((errno.ENOSPC, "No space left on device"),
                                           (errno.EDQUOT, "Disk quota exceeded"),
                                           (errno.EROFS, "Read-only file system")) if word in text), None)
        if code in _DISK:
            path = getattr(x, "filename", None) or _path_in(str(x)) or "the output"
            if os.path.basename(str(path)).startswith(".") and str(path).endswith(".tmp"):  # the writer's temporary
                path = os.path.dirname(str(path))
            return _DISK[code].format(path=path)
    return None


def _path_in(text: str) -> str | None:
    """The first quoted absolute path of a message (TensorStore names the file it failed to write), cut where
    Orbax's temporary directory starts."""
    m = re.search(r"[\"'](/[^\"']+)[\"']", text)
    return m and re.split(r"\.orbax-checkpoint-tmp", m.group(1))[0]
