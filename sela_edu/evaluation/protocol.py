"""Frozen-feature evaluation: how good is a representation learnt without labels?

The protocols of the SeLa paper, as small functions that take tensors and return numbers:

* :func:`extract_features` runs a model over a data set (eval mode, no gradients) and returns the
  ``N x D`` feature matrix in data-set order.
* :func:`weighted_knn` / :func:`knn_accuracy`: the weighted k-nearest-neighbour classifier of Wu et al.
  (2018, instance discrimination), used by SeLa on CIFAR: L2-normalised features, cosine similarity,
  each of the k nearest training images votes for its class with weight ``exp(similarity / sigma)``.
* :func:`pca_project`: the CIFAR protocol first reduces the 4096-d AlexNet fc features to 128-d by PCA.
* :func:`linear_probe`: a multinomial logistic regression trained on frozen features.
* :func:`frozen_evaluation`: both protocols for one model on a train/test pair of data sets (what the
  notebooks report).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


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


# --------------------------------------------------------------------------- feature extraction

def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        x = batch[0]
        y = batch[1] if len(batch) >= 2 else None
        idx = batch[2] if len(batch) == 3 else None
        return x, y, idx
    raise ValueError("each batch must be an image tensor or a tuple (x,), (x, targets) or "
                     f"(x, targets, index); got {type(batch).__name__}"
                     + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


@torch.no_grad()
def extract_features(model: nn.Module, data, device: str | torch.device | None = None, *,
                     batch_size: int = 256, return_targets: bool = False, progress: bool = False):
    """Features of every image, in data-set order.

    Args:
        model: a :class:`~sela_edu.models.MultiHeadNet` (its ``features`` method is used) or any module
            (its output is used). It runs in eval mode (BatchNorm statistics frozen, no dropout) and is
            put back in its previous mode afterwards.
        data: either a float image tensor ``N x C x H x W`` (already normalised; batched here), or an
            iterable of batches as the data contract's loaders yield them: ``(x, targets, index)``;
            ``(x, targets)`` and bare ``x`` batches are taken in iteration order. With an index, row
            ``index[i]`` of the result holds image ``i`` of the batch, so shuffled loaders are fine; the
            indices seen must be exactly ``0 .. N-1`` once each.
        device: where the model runs; default: where its parameters are.
        batch_size: only used for a tensor ``data``.
        return_targets: also return the targets (needs batches that carry them).
        progress: show a tqdm bar.

    Returns:
        ``N x D`` float32 CPU tensor, or ``(features, targets)`` with ``return_targets=True``.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    if isinstance(data, torch.Tensor):
        if return_targets:
            raise ValueError("return_targets=True needs batches with targets; a bare image tensor has none")
        if data.ndim != 4 or not data.is_floating_point():
            raise ValueError("an image tensor must be float N x C x H x W (normalised), got "
                             f"dtype {data.dtype} and shape {tuple(data.shape)}; for uint8 images use a loader")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        batches: Iterable = (data[i:i + batch_size] for i in range(0, data.shape[0], batch_size))
        total = (data.shape[0] + batch_size - 1) // batch_size
    elif isinstance(data, Iterable):
        batches, total = data, (len(data) if hasattr(data, "__len__") else None)
    else:
        raise ValueError(f"data must be an image tensor or an iterable of batches, got {type(data).__name__}")

    fn = model.features if hasattr(model, "features") and callable(model.features) else model
    was_training = model.training
    model.eval()
    feats, targets, indices = [], [], []
    try:
        for batch in tqdm(batches, total=total, disable=not progress, desc="features", leave=False):
            x, y, idx = _split_batch(batch)
            out = fn(x.to(device, non_blocking=True))
            if isinstance(out, (list, tuple)):
                raise ValueError("the model returned a list (several heads); pass a model with a "
                                 "`features` method, or a module that returns one tensor")
            feats.append(out.detach().float().reshape(out.shape[0], -1).cpu())
            if return_targets:
                if y is None:
                    raise ValueError("return_targets=True but the batches carry no targets")
                targets.append(torch.as_tensor(y).long().cpu())
            indices.append(None if idx is None else torch.as_tensor(idx).long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("data yielded no batches")

    features = torch.cat(feats)
    target_tensor = torch.cat(targets) if return_targets else None
    if any(i is not None for i in indices):
        if any(i is None for i in indices):
            raise ValueError("some batches carry an index and some do not")
        index = torch.cat(indices)
        n = index.numel()
        if n != features.shape[0]:
            raise ValueError(f"got {n} indices for {features.shape[0]} feature rows")
        order = torch.argsort(index)
        if not torch.equal(index[order], torch.arange(n)):
            distinct = int(torch.unique(index).numel())
            raise ValueError(
                f"the loader's indices must cover 0..{n - 1} exactly once; saw {n} rows, {distinct} "
                f"distinct indices, largest {int(index.max())}. Use an evaluation loader over the whole "
                "data set (train=False, drop_last=False, not a distributed shard)")
        features = features[order]
        if target_tensor is not None:
            target_tensor = target_tensor[order]
    return (features, target_tensor) if return_targets else features


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


def frozen_evaluation(model, train_data, test_data, *, knn_k: int = 200, pca_dim: int | None = None,
                      linear: bool = True, batch_size: int = 512, device=None) -> dict[str, float]:
    """kNN accuracy (weighted vote, sigma 0.1) and linear-probe accuracy, in %, of ``model``'s frozen
    features: ``train_data`` is the kNN memory bank and the probe's training set, ``test_data`` is
    scored. ``pca_dim`` applies the paper's CIFAR protocol (PCA to 128 before kNN).

    To compare models, give them all the same ``train_data`` (e.g. the full, balanced training split
    even when a model was trained on an imbalanced subset): the evaluation then measures the features,
    not the evaluation set.
    """
    from sela_edu.data import make_loader

    dev = device if device is not None else next(model.parameters()).device
    train_feats = extract_features(model, make_loader(train_data, batch_size, train=False, device=dev))
    test_feats = extract_features(model, make_loader(test_data, batch_size, train=False, device=dev))
    knn_train, knn_test = (pca_project(train_feats, test_feats, dim=pca_dim) if pca_dim
                           else (train_feats, test_feats))
    k = min(knn_k, len(train_data))
    out = {"knn": 100.0 * knn_accuracy(knn_train, train_data.targets, knn_test, test_data.targets, k=k)}
    if linear:
        out["linear"] = 100.0 * linear_probe(train_feats, train_data.targets, test_feats,
                                             test_data.targets).accuracy
    return out


__all__ = ["extract_features", "weighted_knn", "knn_accuracy", "pca_project", "linear_probe",
           "LinearProbe", "LinearProbeResult", "frozen_evaluation"]
