"""DeepCluster (Caron et al., 2018), the paper's baseline: k-means on the current features of the whole
training set; the heads start afresh after each clustering (its ids mean nothing from one to the next),
or, kept, find their clusters again under the previous ids (:func:`~sela_edu.training.labelstep.matched_ids`)."""

from __future__ import annotations

from sela_edu.training.labelstep import kmeans_relabel, matched_ids
from sela_edu.training.methods.base import Method


class KMeans(Method):
    name = "kmeans"

    def new_labels(self, s, loop, previous, part):
        new = kmeans_relabel(s.model, s.data, s.ks, seed=self.config.seed + 1000 * loop.relabel_count,
                             loader=s.score_loader, timings=part)
        if not self.config.reinits_heads() and loop.has_optimised:
            new = matched_ids(previous, new, s.ks)  # kept heads must find their cluster under the same id
        return new, []
