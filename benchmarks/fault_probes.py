"""Every fault probe a user can cause, run as a user would (the command lines on the smoke configs), with what
happened: a clear error (exit status != 0, one message naming what is wrong and what to do, the workdir as it
was), a correct recovery, or WRONG (exit 0 with a wrong result, a traceback without a message, a file lost).

    python benchmarks/fault_probes.py --out benchmarks/results/fault_probes.md

Root on Linux mounts two small tmpfs for the real full-disk and read-only probes (else those rows say skipped).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DDPM = "experiments/configs/digits_ddpm.py:smoke"
FLOW = "experiments/configs/digits_flow.py:smoke"


def cli(module, *args, env=None, timeout=900):
    t = time.time()
    p = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    return p.returncode, p.stdout + p.stderr, time.time() - t


def message(out: str) -> str:
    """The line a user reads: the one-line error, else the exception's last line."""
    lines = [x for x in out.splitlines() if x.strip() and not x.startswith(("I1", "W1", "train:"))]
    for x in reversed(lines):
        if x.startswith("error:") or re.match(r"^[\w.]*(Error|Exception|Failure)\b", x) or "FATAL" in x:
            return x
    return lines[-1] if lines else ""


def files(path) -> dict:
    out = {}
    for d, _, names in os.walk(path):
        for n in names:
            p = os.path.join(d, n)
            if n != ".lock" and "tfevents" not in n:
                out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def train(wd, *over, config=DDPM, **kw):
    return cli("experiments.train", f"--config={config}", f"--workdir={wd}", "--config.train.num_steps=2",
               "--config.train.checkpoint_every=2", *over, **kw)


class Probes:
    def __init__(self, work):
        self.work, self.rows = work, []
        self.base = os.path.join(work, "base")
        rc, out, _ = train(self.base)
        assert rc == 0, out[-3000:]

    def fresh(self, name):
        d = os.path.join(self.work, name)
        shutil.rmtree(d, ignore_errors=True)
        return d

    def copy(self, name):
        d = self.fresh(name)
        shutil.copytree(self.base, d)
        return d

    def row(self, group, probe, ok, what, seconds=None):
        self.rows.append((group, probe, "yes" if ok else "WRONG", what.replace("|", "/")[:300],
                          "" if seconds is None else f"{seconds:.1f}"))
        print(f"[{'ok' if ok else 'WRONG'}] {group} / {probe}: {what[:200]}", flush=True)

    def refused(self, group, probe, module, *args, match, keep=None, env=None):
        """A refusal: exit != 0, the message matches, ``keep`` (a directory) byte for byte as it was."""
        before = files(keep) if keep else None
        rc, out, s = cli(module, *args, env=env)
        msg = message(out)
        same = keep is None or files(keep) == before
        self.row(group, probe, rc != 0 and re.search(match, msg) is not None and same,
                 f"rc {rc}: {msg}" + ("" if same else " (the workdir changed)"), s)
        return rc, out


def run_probes(P: Probes):
    wd = P.base
    # --- values that cannot train, refused before the workdir is touched ---------------------------------------
    for field, value in [("optim.learning_rate", "nan"), ("optim.learning_rate", "0"), ("train.num_steps", "0"),
                         ("train.checkpoint_every", "0"), ("diffusion.schedule", "foo"),
                         ("diffusion.prediction", "foo"), ("diffusion.weighting", "foo"),
                         ("diffusion.loss_type", "foo"), ("diffusion.variance", "foo")]:
        d = P.fresh("bad")
        rc, out, s = cli("experiments.train", f"--config={DDPM}", f"--workdir={d}", f"--config.{field}={value}")
        P.row("start", f"--config.{field}={value}", rc != 0 and not os.path.exists(d) and
              (value in message(out) or field.split(".")[1] in message(out)), f"rc {rc} in {s:.1f} s, workdir "
              f"{'absent' if not os.path.exists(d) else 'LEFT'}: {message(out)}", s)
    d = P.fresh("bad")
    cli("experiments.train", f"--config={DDPM}", f"--workdir={d}", "--config.diffusion.schedule=foo")
    rc, out, s = train(d)
    P.row("start", "the corrected command after a refused start", rc == 0, f"rc {rc}: trains", s)
    d = P.fresh("oom")
    rc, out, s = train(d, "--config.optim.batch_size=1024", "--config.model.base_channels=1024")
    P.row("start", "a step too large for memory", rc != 0 and "batch" in message(out) and not os.path.exists(d),
          f"rc {rc}: {message(out)}; workdir {'absent' if not os.path.exists(d) else 'LEFT'}", s)
    # --- one trainer per workdir, fail fast ----------------------------------------------------------------------
    d = P.copy("locked")
    p = subprocess.Popen([sys.executable, "-m", "experiments.train", f"--config={DDPM}", f"--workdir={d}",
                          "--config.train.num_steps=4000", "--config.train.checkpoint_every=2"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:  # the first trainer is training
        if "[4]" in line:
            break
    rc, out, s = train(d, "--config.train.num_steps=4000")
    p.kill()
    p.wait()
    P.row("start", "a second trainer on the same workdir", rc != 0 and str(p.pid) in message(out),
          f"rc {rc}: {message(out)}", s)
    d = P.fresh("link")
    os.symlink(os.path.join(P.work, "nowhere"), d)
    P.refused("start", "a dangling symlink as workdir", "experiments.train", f"--config={DDPM}", f"--workdir={d}",
              match=r"is a link to .* which does not exist")
    os.remove(d)
    d = P.copy("cutcfg")
    text = open(os.path.join(d, "config.json")).read()
    open(os.path.join(d, "config.json"), "w").write(text[: len(text) // 2])
    P.refused("start", "a cut config.json", "experiments.sample", f"--workdir={d}",
              match=r"config.json is not a readable config")
    data = os.path.join(P.work, "data_cut")
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(os.environ["JAXDIFF_DATA_DIR"], data)
    for f in [os.path.join(r, n) for r, _, ns in os.walk(data) for n in ns if "train.array_record" in n]:
        os.truncate(f, os.path.getsize(f) // 2)
    d = P.fresh("cutdata")
    rc, out, s = train(d, env={"JAXDIFF_DATA_DIR": data})
    P.row("start", "a cut data file", rc != 0 and "cut short or damaged: delete" in message(out) and
          not os.path.exists(d), f"rc {rc}: {message(out)}", s)
    rc, out, s = cli("experiments.sample", f"--workdir={wd}", "--num_samples=4", env={"JAX_PLATFORMS": "cuda"})
    P.row("start", "JAX_PLATFORMS=cuda on a machine without CUDA", rc != 0 and "JAX_PLATFORMS=cuda" in message(out),
          f"rc {rc}: {message(out)}", s)
    # --- sample / evaluate refuse what they cannot use -------------------------------------------------------
    npz = os.path.join(P.work, "img")
    os.makedirs(npz, exist_ok=True)
    x = np.zeros((1, 8, 8, 1), np.float32)
    imgs = {"nan": np.where(np.arange(64).reshape(1, 8, 8, 1) == 5, np.nan, x), "50": x + 50,
            "uint8": (np.arange(64).reshape(1, 8, 8, 1) * 4).astype(np.uint8), "shape": np.zeros((1, 4, 4, 1))}
    for k, v in imgs.items():
        np.savez(os.path.join(npz, f"{k}.npz"), images=v)
    for args, match in [(["--num_samples=0"], r"--num_samples=0; allowed"), (["--num_samples=-5"], r"allowed"),
                        (["--num_steps=0"], r"--num_steps=0; allowed"), (["--clip_x0=-1"], r"--clip_x0=-1.0"),
                        (["--sampler=ddim", '--options={"eta":"abc"}'], r"eta='abc'.*allowed: a number"),
                        (["--options=[1,2]"], r"must be a JSON object"), (["--options={bad"], r"is not JSON"),
                        ([f"--init_image={npz}/nan.npz"], r"not finite"),
                        ([f"--init_image={npz}/50.npz"], r"allowed: \[-1, 1\]"),
                        ([f"--init_image={npz}/uint8.npz"], r"allowed: \[-1, 1\]"),
                        ([f"--init_image={npz}/shape.npz"], r"shape \(4, 4, 1\).*\(8, 8, 1\)")]:
        P.refused("sample", " ".join(args), "experiments.sample", f"--workdir={wd}", *args, match=match, keep=wd)
    P.refused("evaluate", "--num_steps=0", "experiments.evaluate", f"--workdir={wd}", "--num_steps=0",
              match=r"--num_steps=0; allowed", keep=wd)
    np.savez(os.path.join(npz, "nan_samples.npz"), samples=np.full((4, 8, 8, 1), np.nan, np.float32),
             sampler="ddim", num_steps=2)
    P.refused("evaluate", "--samples of NaN", "experiments.evaluate", f"--workdir={wd}", "--novlb",
              f"--samples={npz}/nan_samples.npz", match=r"not finite", keep=wd)
    np.savez(os.path.join(npz, "cut.npz"), samples=np.zeros((64, 8, 8, 1), np.float32), sampler="ddim", num_steps=2)
    os.truncate(os.path.join(npz, "cut.npz"), os.path.getsize(os.path.join(npz, "cut.npz")) // 2)
    P.refused("evaluate", "--samples of an .npz cut short", "experiments.evaluate", f"--workdir={wd}", "--novlb",
              f"--samples={npz}/cut.npz", match=r"cut.npz cannot be read .*cut short", keep=wd)
    flow = P.fresh("flow")
    rc, out, _ = train(flow, config=FLOW)
    assert rc == 0, out[-2000:]
    P.refused("sample", "flow-matching workdir, --sampler euler --num_steps 2", "experiments.sample",
              f"--workdir={flow}", "--sampler=euler", "--num_steps=2", match=r"infinite at t = 1 .*t_max < 1",
              keep=flow)
    # --- outputs written whole, under fresh names ---------------------------------------------------------------
    out_dir = os.path.join(P.work, "outs")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.sample", f"--workdir={wd}", "--num_samples=4",
                               f"--out={out_dir}/s"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    rcs = [p.wait() for p in procs]
    got = sorted(n for n in os.listdir(out_dir) if n.endswith(".npz"))
    whole = all(np.load(os.path.join(out_dir, n))["samples"].shape == (4, 8, 8, 1) for n in got)
    P.row("outputs", "two samplers finishing together, one --out", rcs == [0, 0] and len(got) == 2 and whole,
          f"rc {rcs}; files {got}, each whole: {whole}")
    d = P.fresh("pema_base")
    train(d, "--config.optim.posthoc_ema=(0.05,0.1)", "--config.train.num_steps=4")
    target = os.path.join(P.work, "pema_out")
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "experiments.posthoc_ema", f"--workdir={d}", f"--out={target}", "--sigma_rel=0.1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:  # kill -9 once it has started writing
        if "wrot" in line.lower() or "sav" in line.lower() or "checkpoint" in line.lower():
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = os.path.exists(target)
    rc = subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode
    P.row("outputs", "posthoc_ema killed while it builds its output, then run again", not left and rc == 0,
          f"after kill -9: {'the output directory is LEFT' if left else 'no output directory left'}; the rerun: "
          f"rc {rc}")
    # --- full and read-only disks (tmpfs, root only) ------------------------------------------------------------
    tiny = os.path.join(P.work, "tiny")
    os.makedirs(tiny, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", tiny],
                                                  capture_output=True).returncode == 0
    if mounted:
        try:
            rc, out, s = train(os.path.join(tiny, "run"))
            n = len(out.splitlines())
            P.row("disk", "a full disk at the first checkpoint", rc != 0 and "no space" in message(out) and
                  not os.path.exists(os.path.join(tiny, "run")), f"rc {rc}, {n} lines of output: {message(out)}", s)
            try:  # fill the disk
                with open(os.path.join(tiny, "fill"), "wb") as f:
                    f.write(b"\0" * (600 * 1024))
            except OSError:
                pass
            rc, out, s = cli("experiments.sample", f"--workdir={wd}", "--num_samples=64", f"--out={tiny}/s")
            left = [n for n in os.listdir(tiny) if n != "fill"]
            P.row("disk", "sample --out on a full disk", rc != 0 and not left and "no space" in message(out),
                  f"rc {rc}: {message(out)}; files left: {left}", s)
            subprocess.run(["umount", tiny])
            ro = os.path.join(P.work, "ro")
            os.makedirs(ro, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", ro], check=True)
            shutil.copytree(wd, os.path.join(ro, "run"))
            subprocess.run(["mount", "-o", "remount,ro", ro], check=True)
            rc, out, s = cli("experiments.sample", f"--workdir={ro}/run", "--num_samples=4",
                             f"--out={P.work}/ro_s")
            rc2, out2, s2 = cli("experiments.evaluate", f"--workdir={ro}/run", f"--samples={P.work}/ro_s.npz",
                                "--novlb", f"--out={P.work}/ro_m")
            P.row("disk", "a read-only workdir: sample and evaluate with --out elsewhere", rc == 0 and rc2 == 0,
                  f"rc {rc} / {rc2}: {message(out2) if rc2 else 'metrics written to ro_m.json'}", s + s2)
            P.refused("disk", "a read-only workdir: sample into it", "experiments.sample", f"--workdir={ro}/run",
                      "--num_samples=4", match=r"read-only storage")
            before = files(os.path.join(ro, "run"))
            rc, out, s = train(os.path.join(ro, "run"), "--config.train.num_steps=4")
            P.row("disk", "train on in a workdir on read-only storage", rc != 0 and re.search(
                r"[Rr]ead-only", message(out)) is not None and files(os.path.join(ro, "run")) == before,
                f"rc {rc} in {s:.1f} s: {message(out)}", s)
            subprocess.run(["umount", ro])
        finally:
            subprocess.run(["umount", tiny], capture_output=True)
    else:
        P.row("disk", "full and read-only disks", True, "skipped: mounting a tmpfs needs root")
    # --- interrupted training resumes bitwise ------------------------------------------------------------------
    ref = P.fresh("ref")
    train(ref, "--config.train.num_steps=6")
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM):
        d = P.fresh(f"sig{int(sig)}")
        p = subprocess.Popen([sys.executable, "-m", "experiments.train", f"--config={DDPM}", f"--workdir={d}",
                              "--config.train.num_steps=6", "--config.train.checkpoint_every=2"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            if "[2]" in line or "[4]" in line:  # a logged step: a checkpoint is being written
                p.send_signal(sig)
                break
        p.wait()
        rc, out, s = train(d, "--config.train.num_steps=6")
        same = _params(d) == _params(ref)
        P.row("resume", f"{signal.Signals(sig).name} mid-run, then the same command", rc == 0 and same,
              f"rc {rc}: final params {'bitwise equal to' if same else 'DIFFER from'} an uninterrupted run", s)
    d = P.copy("torn")
    ckpt = os.path.join(d, "checkpoints", "2")
    for r, _, ns in os.walk(ckpt):
        for n in ns:
            if os.path.getsize(os.path.join(r, n)) > 1000:
                os.truncate(os.path.join(r, n), 100)
    rc, out, s = train(d, "--config.train.num_steps=4")
    P.row("resume", "its only checkpoint torn, then the same command", rc != 0 and re.search(
        r"no readable checkpoint .*move them away", message(out)) is not None and os.path.isdir(ckpt),
        f"rc {rc}: {message(out)}; the torn checkpoint is kept", s)
    link = P.fresh("link_ok")
    os.symlink(P.copy("link_target"), link)
    rc, out, s = cli("experiments.sample", f"--workdir={link}", "--num_samples=4")
    P.row("paths", "a symlinked workdir", rc == 0, f"rc {rc}", s)
    d = P.fresh("nonascii_é")
    rc, out, s = train(d)
    P.row("paths", "a non-ASCII workdir path", rc == 0, f"rc {rc}", s)


def _params(wd):
    import jax

    from jaxdiff.training.restore import restore

    _, _, params, _, _ = restore(wd)
    return hashlib.sha256(b"".join(np.asarray(v).tobytes() for v in jax.tree_util.tree_leaves(params))).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="jaxdiff_probes_")
    os.environ.setdefault("JAXDIFF_DATA_DIR", os.path.join(work, "data"))
    from benchmarks.stamp import stamp_line

    P = Probes(work)
    run_probes(P)
    from jaxdiff.outputs import save_new

    bad = sum(r[2] != "yes" for r in P.rows)
    text = ("# Fault probes\n\n" + stamp_line("python benchmarks/fault_probes.py --out " + a.out) + "\n\n"
            f"{len(P.rows)} probes, {bad} wrong. A row is right when the command ends in a clear error naming "
            "what is wrong and what to do, with the workdir as it was, or recovers correctly.\n\n"
            "| group | probe | right | what happened | s |\n|---|---|---|---|---|\n" +
            "".join(f"| {' | '.join(r)} |\n" for r in P.rows))
    print(save_new(a.out if a.out.endswith(".md") else a.out + ".md", lambda f: f.write(text.encode())))
    json.dump(P.rows, sys.stdout) if bad else None


if __name__ == "__main__":
    main()
