"""The README's score-model table: FD (DPM-Solver++(2M), 20 steps; NCSN: its config's annealed Langevin)
and probability-flow-ODE test bits/dim (100 test images) of runs/digits_{vpsde,subvpsde,vesde,ncsn}.

    python benchmarks/score_models.py      # after training the four configs (see the README)
"""
import json
import time

from jaxdiff.apps.evaluate import evaluate, ode_bpd_of_test
from jaxdiff.data import to_float
from jaxdiff.training.build import build_pipeline
from jaxdiff.training.restore import restore_trained


def main():
    out = {}
    for name, sampler, steps, ode in (("vpsde", "dpmpp_2m", 20, True), ("subvpsde", "dpmpp_2m", 20, True),
                                      ("vesde", "dpmpp_2m", 20, True), ("ncsn", None, None, False)):
        wd = f"runs/digits_{name}"
        t0 = time.time()
        m = evaluate(wd, sampler=sampler, num_steps=steps, vlb=False, ode=False)
        r = {k: m[k] for k in ("fd", "fd_interval", "fd_floor_train_vs_test", "sample_frac_confident_0.9",
                               "sample_class_balance_pvalue", "sampler", "num_steps", "options") if k in m}
        if ode:
            config, model, schedule, params, step = restore_trained(wd)
            config.eval.ode_bpd_examples = 100
            test = build_pipeline(config, "test", 1)
            tx = to_float(test.all_images(), config.data.num_levels)
            r.update(ode_bpd_of_test(config, model, schedule, params, tx))
        r["seconds"] = time.time() - t0
        out[name] = r
        print("RESULT", name, json.dumps(r), flush=True)
    json.dump(out, open("benchmarks/results/score_models.json", "w"), indent=2)


if __name__ == "__main__":
    main()
