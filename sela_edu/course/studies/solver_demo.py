"""A one-minute look at the label step on the embedded digits: ``python -m sela_edu.course.studies.solver_demo``.

Scores come from a "network" that is nothing but 10 randomly chosen digits used as prototypes (score =
negative distance to each). Taking the argmax of such scores gives very unequal clusters; SeLa's
equipartition, solved by Sinkhorn-Knopp, gives equal ones. The demo prints both, with their agreement
with the true digit classes, and writes a bar chart of the cluster sizes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from sela_edu.settings import figures_dir
from sela_edu.labelling import self_label


def prototype_scores(x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Negative squared distances to ``k`` random rows of ``x``, scaled to unit spread."""
    g = torch.Generator().manual_seed(seed)
    protos = x[torch.randperm(len(x), generator=g)[:k]]
    scores = -torch.cdist(x, protos).pow(2)
    return (scores - scores.mean()) / scores.std()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = digits.target
    scores = prototype_scores(x, args.clusters, args.seed)

    greedy = scores.argmax(dim=1)
    start = time.perf_counter()
    result = self_label(scores, args.lam)
    seconds = time.perf_counter() - start

    greedy_sizes = torch.bincount(greedy, minlength=args.clusters)
    print(f"digits: N={len(x)} images, K={args.clusters} clusters, lambda={args.lam:g}")
    print(f"argmax of the scores : cluster sizes {greedy_sizes.tolist()}, NMI with the digit classes "
          f"{normalized_mutual_info_score(y, greedy):.3f}")
    print(f"Sinkhorn-Knopp labels: cluster sizes {result.cluster_sizes.tolist()}, NMI "
          f"{normalized_mutual_info_score(y, result.labels):.3f}")
    print(f"solver: {result.iterations} iterations, cluster-mass error {result.error:.1e} "
          f"(converged={result.converged}), {seconds * 1e3:.1f} ms")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ks = np.arange(args.clusters)
    ax.bar(ks - 0.2, greedy_sizes.numpy(), width=0.4, label="argmax of scores")
    ax.bar(ks + 0.2, result.cluster_sizes.numpy(), width=0.4, label="Sinkhorn-Knopp (equipartition)")
    ax.axhline(len(x) / args.clusters, color="k", lw=0.8, ls="--", label="N / K")
    ax.set_xlabel("cluster")
    ax.set_ylabel("images")
    ax.set_title("Cluster sizes on digits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = figures_dir() / "solver_demo_cluster_sizes.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"figure written to {path}")
    return {"result": result, "figure": path}


if __name__ == "__main__":
    main()
