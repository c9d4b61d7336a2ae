"""DeepCluster-v2 (SwAV's paper, appendix): k-means on a memory bank, prototypes set to the centroids.

The training pass writes each image's embeddings (the L2-normalised projections of its two large crops)
into a memory bank; every label optimisation clusters it by spherical k-means (head h on bank h mod 2, as
the official code) and copies the centroids into the head's prototypes, so that the cluster ids and the
heads agree without re-initialising them. Every view is then trained on its image's cluster with the
temperature. The first optimisation, before any training batch, fills the bank from one pass over the
un-augmented images (the official code's ``init_memory`` does it over its training loader).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from sela_edu.models import unwrap
from sela_edu.training.methods.base import Method, forward_views, labels_loss
from sela_edu.training.runtime import sync

BANKS = 2


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, k: int, iterations: int = 10, generator: torch.Generator | None = None):
    """k-means on the unit sphere (``x``: N x d unit rows): centroids start at k distinct random rows; each
    iteration assigns every row to its most similar centroid (dot product) and moves each centroid to the
    normalised mean of its rows (an empty cluster keeps its centroid). Returns (k x d centroids, N labels),
    the labels assigned by the final centroids."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= N rows, got k = {k} for N = {n}")
    start = torch.randperm(n, generator=generator)[:k].to(x.device)
    centroids = x[start].clone()
    for _ in range(iterations):
        labels = (x @ centroids.t()).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        moved = counts > 0
        centroids[moved] = F.normalize(sums[moved], dim=1)
    return centroids, (x @ centroids.t()).argmax(dim=1)


class DeepClusterV2(Method):
    name = "deepcluster-v2"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.bank: torch.Tensor | None = None  # BANKS x N x d, rows by image index

    def loss(self, s, loop, views, index):
        outputs, embeddings = forward_views(s.net, views, embedding=True)
        if self.bank is not None:
            n = views[0].shape[0]
            with torch.no_grad():
                for b in range(BANKS):
                    view = b if b < len(views) else 0
                    self.bank[b, index] = embeddings[view * n:(view + 1) * n].detach().float()
        return labels_loss(s, loop.labels, views, index, outputs=outputs)

    def new_labels(self, s, loop, previous, part):
        t0 = time.perf_counter()
        if self.bank is None:
            self.bank = fill_bank(s)
        sync(s.device)
        t1 = time.perf_counter()
        model = unwrap(s.model)
        new = previous.clone()
        generator = torch.Generator().manual_seed(self.config.seed + 1000 * loop.relabel_count)
        for h, k in enumerate(s.ks):
            centroids, labels = spherical_kmeans(self.bank[h % BANKS], k, self.config.kmeans_iters, generator)
            with torch.no_grad():
                model.heads[h].weight.copy_(centroids)
            s.optimizer.state.pop(model.heads[h].weight, None)  # momentum of the old prototypes means nothing now
            new[h] = labels.cpu()
        sync(s.device)
        part["score_seconds"], part["solve_seconds"] = t1 - t0, time.perf_counter() - t1
        return new, []

    def state_dict(self) -> dict:
        return {"bank": None if self.bank is None else self.bank.cpu()}

    def load_state_dict(self, state: dict, s) -> None:
        bank = state.get("bank")
        if bank is not None and tuple(bank.shape[:2]) != (BANKS, len(s.data)):
            raise ValueError(f"the checkpoint's memory bank is {tuple(bank.shape)}, this run has {len(s.data)} images")
        self.bank = None if bank is None else bank.to(s.device)


@torch.no_grad()
def fill_bank(s) -> torch.Tensor:
    """Every image's embedding of its un-augmented view, in every bank (network in eval mode)."""
    model = unwrap(s.model)
    was_training = model.training
    model.eval()
    bank = None
    for x, _, index in s.score_loader:
        z = model.embedding(model.features(x.to(s.device))).float()
        if bank is None:
            bank = torch.zeros(BANKS, len(s.data), z.shape[1], device=s.device)
        bank[:, index.to(s.device)] = z
    model.train(was_training)
    return bank
