"""Variants of the ledger's plain SeLa run, run and scored exactly as the ledger runs it: what lifts
SeLa's NMI on Fashion-MNIST (the clustering gap to k-means pseudo-labels), and relabelling from the
training pass (``score_mode="training"``) against a scoring pass, over seeds.

Every variant is a change of trainer settings, run and scored by the ledger's own code
(:func:`sela_edu.course.ledger.execute.run_train`: the trainer, then the kit's one evaluation: weighted kNN
k = 10 and a linear probe on the 256-d feature, the K = 10 head's NMI on the test split, and the NMI of
the K = 10 head's training labels, ``labels_nmi``). Each run is one JSON file under ``--out/<profile>/``
(written whole; a second call skips what is stored) with its labels beside it, so the table, the
verdicts against plain SeLa and the confusion between clusters and classes are printed from the files.

Profiles: ``short`` is the ledger's schedule (classroom-short: 10 epochs on 20,000 images, about 2 min
per SeLa run on a 2-core CPU); ``full`` is the classroom preset (20 epochs on all 60,000 images, the
15-minute budget's run); ``smoke`` is seconds on the digits.

The recorded studies (docs/results.md, "The clustering gap" and "Relabelling from the training pass")::

    SELA_DATA_ROOT=../shared/data python benchmarks/sela_variants.py --profile short --seeds 0 --reuse docs/ledger
    SELA_DATA_ROOT=../shared/data python benchmarks/sela_variants.py --profile short --seeds 0 1 2 \\
        --variants sela score-training --reuse docs/ledger

A quick check that it runs (a minute)::

    python benchmarks/sela_variants.py --profile smoke --variants sela kmeans --out /tmp/variants
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics.cluster import contingency_matrix

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sela_edu.course.ledger.execute import LedgerContext, run_train  # noqa: E402
from sela_edu.course.ledger.runs import PROFILES, Run, Setting  # noqa: E402
from sela_edu.course.ledger.store import read_result, result_path, store_run, write_result  # noqa: E402
from sela_edu.course.views.verdicts import compare  # noqa: E402
from sela_edu.evaluation.metrics import nmi  # noqa: E402
from sela_edu.training import read_labels_csv  # noqa: E402

#: the changes tried, each against plain SeLa (the ledger's ``sela``)
VARIANTS: dict[str, dict] = {
    "sela": {},
    "kmeans": {"method": "kmeans"},
    "kmeans-keep-heads": {"method": "kmeans", "reinit_heads": False},   # is k-means' edge its fresh heads?
    "sela-reinit-heads": {"reinit_heads": True},                       # ... would they help SeLa?
    "lam-5": {"lam": 5.0},
    "lam-25": {"lam": 25.0},
    "lam-50": {"lam": 50.0},
    "heads-10x4": {"num_clusters": [10, 10, 10, 10]},                 # no over-clustering heads in the loss
    "k-classes": {"num_heads": 1, "num_clusters": 10},                 # the K = 10 head alone (the ledger's claim 5)
    "round-robin": {"relabel_heads": "round-robin"},
    "schedule-even": {"nopt_schedule": "even"},                        # as many label optimisations late as early
    "cosine-heads": {"head_temperature": 0.1},
    "score-training": {"score_mode": "training"},                      # relabelling from the training pass
    "score-augmented": {"score_mode": "augmented"},
}

GAP_PROFILES = {
    "smoke": PROFILES["smoke"],
    "short": PROFILES["classroom"],
    "full": dataclasses.replace(PROFILES["classroom"], name="classroom-full", preset="classroom"),
}


def run_variant(name: str, seed: int, ctx: LedgerContext, folder: Path, reuse: Path | None = None) -> dict:
    """One variant at one seed, stored (or read back when stored, here or with its labels in ``reuse``)."""
    run = Run(Setting(name, "train", VARIANTS[name]), seed)
    path = result_path(folder, run)
    if not path.exists() and reuse is not None:
        other = LedgerContext(ctx.profile, reuse)
        if result_path(reuse, run).exists():
            write_result(path, read_result(result_path(reuse, run), run, ctx.profile))
            if other.labels_path(run.name).exists():
                ctx.labels_path(run.name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(other.labels_path(run.name), ctx.labels_path(run.name))
    if path.exists():
        return read_result(path, run, ctx.profile)
    return store_run(run, ctx.profile, folder, run_train, ctx)


def confusion(labels: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict:
    """How clusters and classes meet: each class's share in its largest cluster, the classes that no
    cluster holds mostly (split), and the clusters whose largest class is under half of them (mixed)."""
    counts = contingency_matrix(labels.numpy(), targets.numpy())        # clusters x classes
    class_top = counts.max(axis=0) / counts.sum(axis=0)
    cluster_top = counts.max(axis=1) / counts.sum(axis=1)
    mixed = []
    for c in np.flatnonzero(cluster_top < 0.5):
        order = np.argsort(-counts[c], kind="stable")[:3]
        mixed.append(" + ".join(f"{classes[j]} {counts[c, j] / counts[c].sum():.0%}" for j in order))
    return {"counts": counts, "class_top": class_top, "split": [classes[j] for j in np.flatnonzero(class_top < 0.5)],
            "mixed": mixed}


def summary(results: dict[str, list[dict]]) -> None:
    keys = ("labels_nmi", "nmi", "knn", "linear")
    print(f"{'variant':20s} {'seeds':>5s} " + " ".join(f"{k:>15s}" for k in keys) + f" {'minutes':>8s}")
    for name, rows in results.items():
        cells = []
        for k in keys:
            values = [r["measures"][k] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):8.3f} +-{spread:5.3f}")
        minutes = statistics.mean(r["seconds"] for r in rows) / 60
        print(f"{name:20s} {len(rows):5d} " + " ".join(f"{c:>15s}" for c in cells) + f" {minutes:8.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(GAP_PROFILES), default="short")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="docs/variants")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a ledger folder whose runs of the same setting are copied (with their labels, where stored), "
                             "not run again")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = GAP_PROFILES[args.profile]
    folder = Path(args.out) / profile.name
    ctx = LedgerContext(profile, folder)
    ctx.sources = set(VARIANTS)                     # every run keeps its labels, for the confusion below
    results: dict[str, list[dict]] = {}
    for name in args.variants:
        for seed in args.seeds:
            print(f"{name} seed {seed} ...", flush=True)
            results.setdefault(name, []).append(run_variant(name, seed, ctx, folder, args.reuse))
    print(f"\n{profile.name} ({profile.preset}), {ctx.profile.dataset}: mean +- std over the seeds run")
    summary(results)

    base = results.get("sela")
    if base:
        print("\nAgainst plain SeLa (NMI of the K = 10 head's training labels):")
        for name, rows in results.items():
            if name != "sela":
                print(" ", compare(name, [r["measures"]["labels_nmi"] for r in rows], "plain SeLa",
                                   [r["measures"]["labels_nmi"] for r in base], metric="labels' NMI",
                                   decimals=3).text)

    print("\nClusters against classes (first seed's K = 10 labels, where stored):")
    classes = ctx.train.classes
    for name, rows in results.items():
        if not ctx.labels_path(rows[0]["name"]).exists():
            continue
        labels, positions = read_labels_csv(ctx.labels_path(rows[0]["name"]), return_indices=True)
        view = confusion(labels[0], ctx.train.targets[positions], classes)
        print(f"  {name}: NMI {nmi(ctx.train.targets[positions], labels[0]):.3f}; each class's share in its "
              f"largest cluster " + " ".join(f"{s:.2f}" for s in view["class_top"]))
        print(f"    split classes (no cluster holds half): {', '.join(view['split']) or 'none'}")
        print(f"    mixed clusters (no class is half): {'; '.join(view['mixed']) or 'none'}")


if __name__ == "__main__":
    main()
