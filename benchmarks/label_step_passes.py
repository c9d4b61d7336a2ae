"""Passes over P per label optimisation in a classroom training run, warm-started against cold.

Trains the ``classroom`` preset (Fashion-MNIST by default) once. At every label optimisation the trainer
solves each head warm-started from its previous cluster potentials, as it always does; this script also
solves the same heads from scratch on the same network (plain scoring is deterministic, so the scores are
the same), and prints both pass counts, whether each converged, and how many labels the two agree on.
Not part of the test suite. A quick check that it runs::

    python benchmarks/label_step_passes.py --dataset digits --set epochs=2 --set nopts=4

On Fashion-MNIST (one classroom run, 20 epochs, 40 optimisations x 4 heads, solved twice each)::

    SELA_DATA_ROOT=../shared/data python benchmarks/label_step_passes.py

Its output for seed 0 is recorded in docs/label_step_passes_output.txt (about 15 minutes on 2 cores);
docs/label_step_passes_lbfgs_output.txt is the same run with the earlier solver, L-BFGS alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sela_edu.training import config_from_preset, labelstep, train  # noqa: E402
from sela_edu.data import load_dataset  # noqa: E402


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    config = config_from_preset("classroom", dataset=args.dataset, seed=args.seed, **overrides)
    rows: list[dict] = []
    solve = labelstep.relabel

    def relabel_both(model, data, **kw):
        warm = solve(model, data, **kw)
        if any(p is not None for p in kw.get("init") or []):
            cold = solve(model, data, **{**kw, "init": None, "timings": None})
        else:
            cold = warm
        for head, w, c in zip(kw.get("heads") or range(len(warm)), warm, cold):
            rows.append({"head": head, "cold_passes": c.passes, "warm_passes": w.passes, "cold_converged": c.converged,
                         "warm_converged": w.converged, "agree": float((c.labels == w.labels).float().mean())})
        return warm

    labelstep.relabel = relabel_both
    try:
        train(config, load_dataset(args.dataset, "train"), progress=False)
    finally:
        labelstep.relabel = solve
    heads = len(config.cluster_list())
    ks = config.cluster_list()
    print(f"classroom preset on {args.dataset} ({overrides or 'as it is'}), seed {args.seed}; "
          f"tol {config.label_tol:g}, lambda {config.lam:g}")
    print(f"{'relabel':>7} {'head':>4} {'K':>4} {'cold passes':>11} {'warm passes':>11} {'agree %':>8}")
    for i, row in enumerate(rows):
        row["relabel"] = i // heads + 1
        row["K"] = ks[row["head"]]
        flag = "" if row["cold_converged"] and row["warm_converged"] else "  NOT CONVERGED"
        print(f"{row['relabel']:>7} {row['head']:>4} {row['K']:>4} {row['cold_passes']:>11} {row['warm_passes']:>11} "
              f"{100 * row['agree']:>8.2f}{flag}")
    later = [r for r in rows if r["relabel"] > 1]
    print(f"label optimisations: {len(rows)}; converged cold {sum(r['cold_converged'] for r in rows)}, "
          f"warm {sum(r['warm_converged'] for r in rows)}")
    print(f"most passes: cold {max(r['cold_passes'] for r in rows)}, warm {max(r['warm_passes'] for r in rows)}")
    if later:
        print(f"after the first: mean passes cold {statistics.fmean(r['cold_passes'] for r in later):.1f}, "
              f"warm {statistics.fmean(r['warm_passes'] for r in later):.1f}; "
              f"lowest label agreement {100 * min(r['agree'] for r in later):.2f} %")
    return rows


if __name__ == "__main__":
    main()
