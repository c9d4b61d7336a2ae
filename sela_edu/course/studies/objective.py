"""Notebook 02's experiments on the self-labelling objective: the label/train loop on a small network
(naive argmax labels collapse, the label step keeps every cluster) and the sweep over lambda.

Functions take tensors and return results; the notebook prints, plots and draws the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sela_edu.course.views.cluster_views import soft_assignment
from sela_edu.evaluation import metrics
from sela_edu.labelling import self_label
from sela_edu.training import initial_labels


@dataclass
class SelfTrainingRun:
    """What :func:`self_training` produced."""

    network: torch.nn.Module
    labels: torch.Tensor        #: int64 N, the last round's labels (on the CPU)
    sizes: list[torch.Tensor]   #: cluster sizes (K) of the initial labels, then after each round

    def nonempty_clusters(self) -> int:
        """Clusters that still hold an image after the last round."""
        return int((self.sizes[-1] > 0).sum())


def network_scores(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first head's scores (N x K, on the CPU) of images ``x``, in eval mode and without gradients."""
    network.eval()
    with torch.no_grad():
        return network(x)[0].cpu()


def self_training(x: torch.Tensor, relabel: Callable[[torch.Tensor], torch.Tensor], *,
                  make_network: Callable[[], torch.nn.Module], clusters: int, rounds: int, steps: int,
                  lr: float, seed: int = 0, batch_size: int = 64) -> SelfTrainingRun:
    """Alternate ``steps`` SGD steps on the current labels with new labels ``relabel(scores)``, ``rounds``
    times, from random equal-sized labels and a fresh network.

    ``relabel`` maps N x K scores to N labels: ``lambda s: s.argmax(1)`` is the naive loop that collapses,
    ``lambda s: self_label(s, lam).labels`` is SeLa's. The network, the initial labels and the batches are
    seeded, so two loops differ only by their ``relabel``.
    """
    if rounds < 1 or steps < 1:
        raise ValueError(f"rounds and steps must be positive, got {rounds} and {steps}")
    net = make_network()
    device = x.device
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    y = initial_labels(len(x), clusters, seed=seed)[0].to(device)
    g = torch.Generator().manual_seed(seed)
    sizes = [torch.bincount(y.cpu(), minlength=clusters)]
    for _ in range(rounds):
        net.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch_size,), generator=g).to(device)
            loss = F.cross_entropy(net(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        y = relabel(network_scores(net, x)).to(device)
        sizes.append(torch.bincount(y.cpu(), minlength=clusters))
    return SelfTrainingRun(net, y.cpu(), sizes)


def row_entropy(rows: np.ndarray) -> float:
    """Mean entropy of the rows of a row-stochastic N x K matrix, in units of log K (1 = uniform rows)."""
    k = rows.shape[1]
    return float(-(rows * np.log(np.clip(rows, 1e-300, None))).sum(1).mean() / np.log(k))


def lambda_sweep(scores: torch.Tensor, lam_values, *, reference_labels: torch.Tensor, targets, tol: float,
                 max_iter: int = 5000) -> list[dict]:
    """The label step on the same scores at each lambda: one row per lambda with ``lam``, ``entropy`` (of
    the plan's normalised rows, in log K), the ``smallest`` and ``largest`` hard cluster, ``agreement``
    (NMI with ``reference_labels``) and ``nmi_truth`` (NMI with ``targets``)."""
    if len(lam_values) == 0:
        raise ValueError("lam_values is empty: give at least one lambda")
    clusters = scores.shape[1]
    sweep = []
    for lam in lam_values:
        res = self_label(scores, lam, tol=tol, max_iter=max_iter)
        sizes = torch.bincount(res.labels.cpu(), minlength=clusters)
        sweep.append(dict(lam=lam, entropy=row_entropy(soft_assignment(scores, res.cluster_potential, lam)),
                          smallest=int(sizes.min()), largest=int(sizes.max()),
                          agreement=metrics.nmi(reference_labels, res.labels),
                          nmi_truth=metrics.nmi(targets, res.labels)))
    return sweep


__all__ = ["SelfTrainingRun", "network_scores", "self_training", "row_entropy", "lambda_sweep"]
