"""Frozen-feature evaluation: how good is a representation learnt without labels?

The protocols of the SeLa paper, as small functions that take tensors and return numbers:

* :func:`evaluate`: the kit's one evaluation protocol (below), used by the notebooks, the trainer and the
  study: weighted kNN and linear probe on the layers asked for, and the heads' NMI / ARI / accuracy.
* :func:`weighted_knn` / :func:`knn_accuracy`: the weighted k-nearest-neighbour classifier of Wu et al.
  (2018, instance discrimination), used by SeLa on CIFAR: L2-normalised features, cosine similarity,
  each of the k nearest training images votes for its class with weight ``exp(similarity / sigma)``.
* :func:`pca_project`: the CIFAR protocol first reduces the 4096-d AlexNet fc features to 128-d by PCA.
* :func:`linear_probe`: a multinomial logistic regression trained on frozen features.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sela_edu.evaluation.scoring import score_dataset


def _as_float_matrix(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D N x D feature matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not t.is_floating_point():
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or infinite values")
    return t


def _as_labels(y, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(y.detach() if isinstance(y, torch.Tensor) else np.asarray(y))
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D tensor of {n} labels (one per feature row), "
                         f"got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {t.dtype}")
    t = t.long()
    if int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class ids, found {int(t.min())}")
    return t


def _num_classes(num_classes: int | None, *labels: torch.Tensor) -> int:
    needed = max(int(y.max()) for y in labels) + 1
    if num_classes is None:
        return needed
    if num_classes < needed:
        raise ValueError(f"num_classes={num_classes} but the labels go up to {needed - 1}")
    return int(num_classes)


# --------------------------------------------------------------------------- weighted kNN

def _knn_predictions(train_feats, train_labels, test_feats, ks: Sequence[int], sigma: float,
                     num_classes: int | None, chunk_size: int, device) -> dict[int, torch.Tensor]:
    train = _as_float_matrix(train_feats, "train_feats")
    test = _as_float_matrix(test_feats, "test_feats")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train_feats has {train.shape[1]} dimensions but test_feats has {test.shape[1]}")
    labels = _as_labels(train_labels, train.shape[0], "train_labels")
    n_classes = _num_classes(num_classes, labels)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= train.shape[0]:
            raise ValueError(f"k must be an integer in [1, {train.shape[0]}] (the number of training "
                             f"images), got {k!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    device = torch.device(device) if device is not None else train.device
    dtype = torch.promote_types(train.dtype, torch.float32)
    train = F.normalize(train.to(device, dtype), dim=1)
    labels = labels.to(device)
    kmax = max(ks)
    preds = {int(k): [] for k in ks}
    # Chunks of test rows keep the similarity matrix at chunk_size x N_train.
    for start in range(0, test.shape[0], chunk_size):
        q = F.normalize(test[start:start + chunk_size].to(device, dtype), dim=1)
        sim, nn_idx = (q @ train.T).topk(kmax, dim=1)  # sorted, most similar first
        # exp((s - s_max) / sigma): the per-row factor exp(-s_max / sigma) does not change the vote, and
        # keeps exp finite for small sigma.
        weights = torch.exp((sim - sim[:, :1]) / sigma)
        nn_labels = labels[nn_idx]
        for k in preds:
            votes = torch.zeros(q.shape[0], n_classes, device=device, dtype=dtype)
            votes.scatter_add_(1, nn_labels[:, :k], weights[:, :k])
            preds[k].append(votes.argmax(dim=1).cpu())
    return {k: torch.cat(v) for k, v in preds.items()}


def weighted_knn(train_feats, train_labels, test_feats, k: int = 200, sigma: float = 0.1,
                 num_classes: int | None = None, *, chunk_size: int = 1024, device=None) -> torch.Tensor:
    """Predict test classes by the weighted kNN vote of Wu et al. (2018).

    Features are L2-normalised; the ``k`` training images most cosine-similar to a test image vote for
    their class with weight ``exp(similarity / sigma)``; the class with the largest total wins (ties:
    the smallest class id). Test images are processed ``chunk_size`` at a time, so memory is
    ``chunk_size x N_train`` similarities at most.

    Returns:
        int64 CPU tensor of predicted classes, one per test row.
    """
    return _knn_predictions(train_feats, train_labels, test_feats, [k], sigma, num_classes, chunk_size,
                            device)[int(k)]


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int | Sequence[int] = 200,
                 sigma: float = 0.1, num_classes: int | None = None, *, chunk_size: int = 1024,
                 device=None) -> float | dict[int, float]:
    """Top-1 accuracy of :func:`weighted_knn`; for a list of ``k`` a dict ``{k: accuracy}`` (the
    neighbours are searched once, for the largest k)."""
    ks = [k] if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else list(k)
    if not ks:
        raise ValueError("k must be an integer or a non-empty list of integers")
    test_n = _as_float_matrix(test_feats, "test_feats").shape[0]
    y_test = _as_labels(test_labels, test_n, "test_labels")
    preds = _knn_predictions(train_feats, train_labels, test_feats, ks, sigma, num_classes, chunk_size,
                             device)
    accs = {kk: float((p == y_test).double().mean()) for kk, p in preds.items()}
    return accs[int(ks[0])] if isinstance(k, (int, np.integer)) else accs


def pca_project(train, test=None, dim: int = 128, *, whiten: bool = False, seed: int = 0):
    """Fit PCA (scikit-learn) on ``train`` and project ``train`` (and ``test``) to ``dim`` dimensions.

    SeLa's CIFAR kNN protocol: 4096-d fc features -> PCA to 128 (no whitening) -> weighted kNN (which
    L2-normalises). Returns ``(train_proj, test_proj)`` as float32 tensors (``test_proj`` is None
    when no test set is given).
    """
    from sklearn.decomposition import PCA

    tr = _as_float_matrix(train, "train")
    te = _as_float_matrix(test, "test") if test is not None else None
    if te is not None and te.shape[1] != tr.shape[1]:
        raise ValueError(f"train has {tr.shape[1]} dimensions but test has {te.shape[1]}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= min(tr.shape):
        raise ValueError(f"dim must be an integer in [1, min(N, D)] = [1, {min(tr.shape)}], got {dim!r}")
    pca = PCA(n_components=int(dim), whiten=whiten, random_state=seed)
    tr_p = torch.from_numpy(pca.fit_transform(tr.cpu().numpy())).float()
    te_p = torch.from_numpy(pca.transform(te.cpu().numpy())).float() if te is not None else None
    return tr_p, te_p


# --------------------------------------------------------------------------- linear probe

class LinearProbe(nn.Module):
    """Standardisation (train mean and std, frozen) followed by a linear layer."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, linear: nn.Linear):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.to(self.mean.dtype) - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
        x = torch.as_tensor(x).to(self.mean.device)
        return torch.cat([self(x[i:i + chunk_size]).argmax(1) for i in range(0, x.shape[0], chunk_size)])


@dataclass
class LinearProbeResult:
    accuracy: float            # top-1 on the test features
    train_accuracy: float
    model: LinearProbe         # the fitted classifier (on `device`)
    iterations: int            # L-BFGS iterations used
    seconds: float


def linear_probe(train_feats, train_y, test_feats, test_y, *, num_classes: int | None = None,
                 weight_decay: float = 1e-4, max_iter: int = 100, standardize: bool = True,
                 device=None) -> LinearProbeResult:
    """Multinomial logistic regression on frozen features, trained full-batch with L-BFGS.

    This is what scikit-learn's ``LogisticRegression(solver="lbfgs")`` fits (cross-entropy plus an L2
    penalty ``weight_decay / 2 * ||W||^2``, i.e. ``C = 1 / (N * weight_decay)``), but in torch float32,
    so that it runs on a GPU and needs no float64 copy of a large feature matrix. Features are
    standardised with the training mean and std. ``max_iter`` 100 is scikit-learn's default too; on
    Fashion-MNIST (60k x 256 PCA features, 10 classes) the test accuracy is flat after ~50 iterations,
    and 100 take 5-15 s on two (shared) CPU cores.

    Returns:
        :class:`LinearProbeResult` with the test accuracy, the training accuracy and the fitted model.
    """
    t0 = time.perf_counter()
    xtr = _as_float_matrix(train_feats, "train_feats")
    xte = _as_float_matrix(test_feats, "test_feats")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train_feats has {xtr.shape[1]} dimensions but test_feats has {xte.shape[1]}")
    ytr = _as_labels(train_y, xtr.shape[0], "train_y")
    yte = _as_labels(test_y, xte.shape[0], "test_y")
    n_classes = _num_classes(num_classes, ytr, yte)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be positive, got {max_iter}")

    device = torch.device(device) if device is not None else xtr.device
    xtr, ytr = xtr.to(device, torch.float32), ytr.to(device)
    if standardize:
        mean, std = xtr.mean(0), xtr.std(0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant features stay as they are
    else:
        mean, std = torch.zeros(xtr.shape[1], device=device), torch.ones(xtr.shape[1], device=device)
    xs = (xtr - mean) / std

    linear = nn.Linear(xtr.shape[1], n_classes).to(device)
    nn.init.zeros_(linear.weight)  # convex problem: a zero start makes the fit deterministic
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(xs), ytr) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    iterations = int(opt.state[linear.weight].get("n_iter", 0))
    probe = LinearProbe(mean, std, linear).eval()
    del xs
    train_acc = float((probe.predict(xtr) == ytr).float().mean())
    test_acc = float((probe.predict(xte.to(device)) == yte.to(device)).float().mean())
    return LinearProbeResult(test_acc, train_acc, probe, iterations, time.perf_counter() - t0)


# --------------------------------------------------------------------------- the protocol

@dataclass
class Evaluation:
    """What :func:`evaluate` measured; accuracies are fractions in [0, 1].

    ``knn``: layer -> {k: weighted-kNN accuracy}; ``linear``: layer -> linear-probe accuracy (empty without
    the probe); ``heads``: one dict per head with ``nmi``, ``ari`` and ``accuracy`` (Hungarian matching) of
    its argmax clusters against the test classes (empty with ``heads=False``).
    """

    knn: dict[str, dict[int, float]]
    linear: dict[str, float]
    heads: list[dict[str, float]]
    seconds: float

    def percent(self) -> dict[str, float]:
        """One flat dict for a table: ``knn_<layer>_k<k>`` and ``linear_<layer>`` in %, ``head<h>_<metric>``."""
        out = {f"knn_{layer}_k{k}": 100.0 * acc for layer, by_k in self.knn.items() for k, acc in by_k.items()}
        out.update({f"linear_{layer}": 100.0 * acc for layer, acc in self.linear.items()})
        out.update({f"head{h}_{name}": value for h, row in enumerate(self.heads) for name, value in row.items()})
        return out

    def accuracies(self, layer: str = "features", k: int | None = None) -> dict[str, float]:
        """``{"knn": %, "linear": %}`` on one layer (k: the only one measured, unless given), the pair the
        notebooks print and compare; ``"linear"`` only when the probe ran."""
        by_k = self.knn[layer]
        if k is None:
            if len(by_k) != 1:
                raise ValueError(f"kNN was measured at k = {sorted(by_k)}: say which k")
            k = next(iter(by_k))
        out = {"knn": 100.0 * by_k[k]}
        if layer in self.linear:
            out["linear"] = 100.0 * self.linear[layer]
        return out


def _scored_with_targets(model, data, outputs, batch_size, device, which: str):
    scored = score_dataset(model, data, outputs=outputs, batch_size=batch_size, device=device)
    if scored.targets is None:
        raise ValueError(f"the {which} data carry no targets: evaluation compares with the true classes")
    return scored


def _head_metrics(head_scores: Sequence[torch.Tensor], targets: torch.Tensor) -> list[dict[str, float]]:
    from sela_edu.evaluation.metrics import ari, cluster_accuracy, nmi

    rows = []
    for scores in head_scores:
        clusters = scores.argmax(1)
        rows.append({"nmi": nmi(targets, clusters), "ari": ari(targets, clusters),
                     "accuracy": cluster_accuracy(targets, clusters)})
    return rows


def evaluate(model: nn.Module, train, test, *, layers: str | Sequence[str] = ("features",),
             knn_k: int | Sequence[int] = 10, sigma: float = 0.1, pca_dim: int | None = None, probe: bool = True,
             heads: bool = True, batch_size: int = 512, device=None) -> Evaluation:
    """The kit's evaluation of a frozen network: the SeLa paper's protocols on ``test``, with ``train`` as
    the kNN memory bank and the probe's training set.

    * weighted kNN (Wu et al. 2018; :func:`knn_accuracy`) with ``knn_k`` neighbours (an int or a list;
      the paper's k = 10, sigma 0.1; each k is capped at the number of training images), on each layer
      of ``layers`` (any output :func:`~sela_edu.evaluation.scoring.score_dataset` knows: ``"features"``,
      ``"conv_features"``, a submodule name); ``pca_dim`` first projects the layer to that many
      dimensions by PCA (the paper's CIFAR protocol: 128), for the kNN only;
    * with ``probe``, the linear probe (:func:`linear_probe`) on each layer's raw features;
    * with ``heads``, every head's NMI, ARI and cluster accuracy on the test images.

    ``train`` and ``test``: data sets or loaders that carry targets (e.g. the trainer's plain loaders, to
    see the images at the network's input size). To compare models, give them all the same ``train``
    (e.g. the full, balanced training split even when a model was trained on an imbalanced subset): the
    evaluation then measures the features, not the evaluation set.
    """
    t0 = time.perf_counter()
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("layers must name at least one layer, e.g. ('features',)")
    ks = [knn_k] if isinstance(knn_k, (int, np.integer)) and not isinstance(knn_k, bool) else list(knn_k)
    if not ks:
        raise ValueError("knn_k must be an integer or a non-empty list of integers")
    train_scored = _scored_with_targets(model, train, layers, batch_size, device, "train")
    test_scored = _scored_with_targets(model, test, [*layers, "heads"] if heads else layers, batch_size, device,
                                       "test")
    knn, linear = {}, {}
    for layer in layers:
        tr, te = train_scored[layer], test_scored[layer]
        knn_tr, knn_te = pca_project(tr, te, dim=pca_dim) if pca_dim else (tr, te)
        capped = [min(int(k), tr.shape[0]) for k in ks]
        accs = knn_accuracy(knn_tr, train_scored.targets, knn_te, test_scored.targets, k=capped, sigma=sigma)
        knn[layer] = {k: accs[c] for k, c in zip(ks, capped)}
        if probe:
            linear[layer] = linear_probe(tr, train_scored.targets, te, test_scored.targets).accuracy
    head_rows = _head_metrics(test_scored["heads"], test_scored.targets) if heads else []
    return Evaluation(knn, linear, head_rows, time.perf_counter() - t0)


__all__ = ["weighted_knn", "knn_accuracy", "pca_project", "linear_probe", "LinearProbe", "LinearProbeResult",
           "Evaluation", "evaluate"]
