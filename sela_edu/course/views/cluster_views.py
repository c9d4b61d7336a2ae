"""The numbers the cluster browser shows, without widgets or figures: the plan's soft assignment, how alike
the clusters are, one :class:`HeadView` per head, and :func:`cluster_state` (everything shown for one cluster).

* ``q_ik = softmax_k(lam * scores_ik + L_k)``, with ``L`` the cluster potential that
  :func:`~sela_edu.labelling.self_label` returns, orders a cluster's members by how sure the plan is;
* the clusters most like one: cosine similarity of the head's weight vectors, of the clusters' mean
  (centred) features, or of their mean soft assignments;
* a cluster's size beside the equal share N/K, its true-class make-up and purity when targets exist.

:mod:`sela_edu.course.views.browser` draws them (ipywidgets, or one static figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sela_edu.course.views.figures import to_numpy

__all__ = ["SIMILARITIES", "HeadView", "soft_assignment", "cluster_similarity", "head_views", "cluster_state"]

SIMILARITIES = ("weights", "features", "scores")


def soft_assignment(scores, potential, lam: float) -> np.ndarray:
    """The transport plan's rows, normalised: ``q_ik = softmax_k(lam * scores_ik + potential_k)`` (N x K).

    ``potential`` is :attr:`~sela_edu.labelling.SelfLabelResult.cluster_potential`; with it, each row is
    the plan's row rescaled to sum to 1, and its argmax is the hard label the solver returned.
    """
    s = to_numpy(scores, float)
    pot = to_numpy(potential, float).ravel()
    if s.ndim != 2 or pot.shape != (s.shape[1],):
        raise ValueError(f"need N x K scores and a K-vector potential, got {s.shape} and {pot.shape}")
    z = lam * s + pot[None, :]
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    q /= q.sum(axis=1, keepdims=True)
    return q


def _cosine(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1.0)
    return unit @ unit.T


def cluster_similarity(kind: str, *, labels=None, num_clusters: int | None = None, weights=None, features=None,
                       soft=None) -> np.ndarray:
    """K x K cosine similarity between clusters.

    ``"weights"``: of the head's weight vectors (K x D, ``head.weight``), free once a model exists.
    ``"features"``: of the clusters' mean features (features centred by their overall mean first,
    since ReLU features all point into one orthant), needs ``features`` (N x D) and ``labels``.
    ``"scores"``: of the clusters' mean soft assignments (needs ``soft``, N x K, and ``labels``): two
    clusters are alike when the plan hesitates between them for the same images.
    An empty cluster gets similarity 0 to every other.
    """
    if kind == "weights":
        if weights is None:
            raise ValueError("similarity 'weights' needs the head's weight matrix (K x D)")
        return _cosine(to_numpy(weights, float))
    if kind not in ("features", "scores"):
        raise ValueError(f"unknown similarity {kind!r}; choose one of {', '.join(SIMILARITIES)}")
    source = features if kind == "features" else soft
    if source is None or labels is None:
        raise ValueError(f"similarity {kind!r} needs labels and the {'features' if kind == 'features' else 'soft assignment'}")
    x = to_numpy(source, float)
    lab = to_numpy(labels).astype(np.int64).ravel()
    k = int(num_clusters if num_clusters is not None else lab.max() + 1)
    if kind == "features":
        x = x - x.mean(axis=0, keepdims=True)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, lab, x)
    counts = np.bincount(lab, minlength=k)[:, None]
    return _cosine(sums / np.maximum(counts, 1))


@dataclass
class HeadView:
    """What the browser knows about one head: a label per image, how confidently the plan gives it,
    and how alike the clusters are."""

    labels: np.ndarray                  #: int64, N
    num_clusters: int
    similarity: np.ndarray              #: K x K
    confidence: np.ndarray | None = None  #: N, the soft assignment of each image to its own cluster
    similarity_kind: str = ""
    _members: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.labels = to_numpy(self.labels).astype(np.int64).ravel()
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_clusters):
            raise ValueError(f"labels must lie in [0, {self.num_clusters}), got "
                             f"[{self.labels.min()}, {self.labels.max()}]")
        self.similarity = to_numpy(self.similarity, float)
        if self.similarity.shape != (self.num_clusters, self.num_clusters):
            raise ValueError(f"similarity must be K x K = {self.num_clusters} x {self.num_clusters}, "
                             f"got {self.similarity.shape}")
        if self.confidence is not None:
            self.confidence = to_numpy(self.confidence, float).ravel()
            if self.confidence.shape != self.labels.shape:
                raise ValueError("need one confidence per label")

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_clusters)

    def members(self, cluster: int, *, least_confident: bool = False) -> np.ndarray:
        """Image positions in ``cluster``, most confident first (or least, or in data order when the
        confidence is unknown)."""
        key = (int(cluster), bool(least_confident))
        if key not in self._members:
            idx = np.flatnonzero(self.labels == cluster)
            if self.confidence is not None:
                conf = self.confidence[idx]
                idx = idx[np.argsort(conf if least_confident else -conf, kind="stable")]
            self._members[key] = idx
        return self._members[key]

    def neighbours(self, cluster: int, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` clusters most like ``cluster`` (not itself), as (cluster, cosine similarity)."""
        sim = self.similarity[int(cluster)].copy()
        sim[int(cluster)] = -np.inf
        order = np.argsort(-sim, kind="stable")[: max(0, min(n, self.num_clusters - 1))]
        return [(int(j), float(sim[j])) for j in order]


def head_views(scores=None, *, lam: float = 10.0, labels=None, potentials=None, weights=None, features=None,
               similarity: str | None = None, num_clusters: Sequence[int] | None = None) -> list[HeadView]:
    """One :class:`HeadView` per head from whatever is known.

    ``scores``: one N x K matrix per head (or a single matrix). Without ``potentials`` the label step
    is solved here (:func:`~sela_edu.labelling.self_label`, at ``lam``) for the cluster potentials; its
    labels are used unless ``labels`` (num_heads x N, e.g. a released labelling) are given.
    Without scores, ``labels`` alone give sizes, make-up and (with ``features`` or ``weights``)
    neighbours, but no confidence order. ``similarity``: one of :data:`SIMILARITIES`, default
    ``"features"`` when features are given, else ``"weights"``, else ``"scores"``.
    """
    from sela_edu.labelling import self_label

    if scores is not None and not isinstance(scores, (list, tuple)):
        scores = [scores]
    if labels is not None:
        labels = to_numpy(labels).astype(np.int64)
        labels = labels[None, :] if labels.ndim == 1 else labels
    if scores is None and labels is None:
        raise ValueError("give scores (one N x K matrix per head) or labels (num_heads x N), or both")
    num_heads = len(scores) if scores is not None else labels.shape[0]
    if labels is not None and labels.shape[0] != num_heads:
        raise ValueError(f"labels have {labels.shape[0]} heads, the scores {num_heads}")
    if weights is not None and len(weights) != num_heads:
        raise ValueError(f"got {len(weights)} weight matrices for {num_heads} heads")
    if potentials is not None and (scores is None or len(potentials) != num_heads):
        raise ValueError("potentials need scores, one K-vector per head")
    if similarity is None:
        similarity = "features" if features is not None else "weights" if weights is not None else "scores"
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}")

    views = []
    for h in range(num_heads):
        soft = None
        if scores is not None:
            s = torch.as_tensor(scores[h]).float()
            pot = potentials[h] if potentials is not None else None
            lab = labels[h] if labels is not None else None
            if pot is None:
                solved = self_label(s, lam)
                pot = solved.cluster_potential
                lab = solved.labels.cpu().numpy() if lab is None else lab
            soft = soft_assignment(s, pot, lam)
            if lab is None:
                lab = soft.argmax(axis=1)
            k = s.shape[1]
        else:
            lab = labels[h]
            k = int(num_clusters[h]) if num_clusters is not None else (
                weights[h].shape[0] if weights is not None else int(lab.max()) + 1)
        lab = np.asarray(lab, dtype=np.int64)
        confidence = soft[np.arange(lab.size), lab] if soft is not None else None
        kind = similarity if not (similarity == "scores" and soft is None) else "weights"
        sim = cluster_similarity(kind, labels=lab, num_clusters=k,
                                 weights=None if weights is None else weights[h], features=features, soft=soft)
        views.append(HeadView(lab, k, sim, confidence, kind))
    return views


def cluster_state(views: Sequence[HeadView], head: int, cluster: int, *, shown: int, num_neighbours: int,
                  targets: np.ndarray | None = None, classes: Sequence[str] = (),
                  least_confident: bool = False) -> dict:
    """Everything the browser shows for one cluster of one head, as plain Python values: its size and
    the equal share, the first ``shown`` members with their confidences (most confident first, or
    least), the ``num_neighbours`` most similar clusters, and with ``targets`` (N true classes, named by
    ``classes``) the make-up, largest class first, and the purity."""
    view = views[head]
    if not 0 <= cluster < view.num_clusters:
        raise ValueError(f"head {head} has clusters 0..{view.num_clusters - 1}, not {cluster}")
    members = view.members(cluster, least_confident=least_confident)
    first = members[:shown]
    state = {
        "head": head,
        "cluster": cluster,
        "size": int(members.size),
        "equal_share": view.labels.size / view.num_clusters,
        "members": first.tolist(),
        "confidence": None if view.confidence is None else view.confidence[first].round(4).tolist(),
        "mean_confidence": (None if view.confidence is None or not members.size
                            else float(view.confidence[members].mean())),
        "neighbours": view.neighbours(cluster, num_neighbours),
        "similarity": view.similarity_kind,
        "purity": None,
        "make_up": None,
    }
    if targets is not None and members.size:
        counts = np.bincount(targets[members], minlength=len(classes))
        order = np.argsort(-counts, kind="stable")
        state["make_up"] = [(classes[c], int(counts[c])) for c in order if counts[c] > 0]
        state["purity"] = float(counts.max() / members.size)
    return state
