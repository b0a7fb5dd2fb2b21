"""Where and when a benchmark ran: software versions, device and date, written into every results file
(``benchmarks/check_readme_evidence.py`` requires them)."""

from __future__ import annotations

import datetime
import os
import platform
import time


def stamp() -> dict:
    import flax
    import jax
    import numpy
    import optax

    dev = jax.devices()[0]
    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": numpy.__version__,
            "device": f"{dev.platform}: {dev.device_kind} x{jax.device_count()} ({os.cpu_count()} CPU cores)",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def stamp_line(command: str) -> str:
    s = stamp()
    return (f"Written by `{command}` on {s['date']}; {s['device']}; python {s['python']}, jax {s['jax']}, "
            f"flax {s['flax']}, optax {s['optax']}, numpy {s['numpy']}")


QUALITY_KEYS = ("fd", "fd_ci", "fd_ratio", "fd_floor_train_vs_test", "fd_floor_ci", "sample_frac_confident_0.9",
                "sample_class_balance_pvalue", "step")


def quality_fields(r: dict) -> dict:
    """The FD protocol's entries of an evaluation result (what a results row keeps)."""
    return {k: r[k] for k in QUALITY_KEYS}


def floor_line(r: dict) -> str:
    return (f"Floor (300 train images vs test): {r['fd_floor_train_vs_test']:.1f} "
            f"[{r['fd_floor_ci'][0]:.1f}, {r['fd_floor_ci'][1]:.1f}]")


def quality_cells(r: dict) -> str:
    """The FD protocol's cells of one evaluated row: FD [95% interval] | FD / floor | confident | class balance."""
    return (f"{r['fd']:.1f} [{r['fd_ci'][0]:.1f}, {r['fd_ci'][1]:.1f}] | {r['fd_ratio']:.2f} | "
            f"{100 * r['sample_frac_confident_0.9']:.1f}% | {r['sample_class_balance_pvalue']:.2g}")


def write_markdown(path: str, lines: list[str]):
    """Write a results table's lines to ``path`` and print them."""
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def median_time(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` (after one call that compiles), blocking on its result."""
    import jax
    import numpy as np

    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
