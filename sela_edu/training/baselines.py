"""k-means pseudo-labels: the DeepCluster baseline SeLa is compared with.

DeepCluster (Caron et al., 2018) labels images by k-means on the network's features (PCA-whitened to
256-d, then L2-normalised) and trains on those labels. Nothing forces the clusters to be of equal size,
so k-means can put most images into a few clusters; DeepCluster fights this with ad hoc fixes
(re-seeding empty clusters from a large one, sampling images uniformly over clusters). SeLa's
equipartition constraint replaces those fixes.

Empty clusters here: scikit-learn's ``KMeans`` moves the centre of an empty cluster to the point
farthest from its centre during the iterations, and ``MiniBatchKMeans`` re-seeds centres that receive
few points (``reassignment_ratio``), so the returned labels normally use all K clusters; they are not
equal in size.
"""

from __future__ import annotations

import numpy as np
import torch

#: Above this many points, :func:`kmeans_labels` switches to MiniBatchKMeans by default.
MINIBATCH_THRESHOLD = 100_000


def kmeans_labels(features, k: int, seed: int = 0, *, pca_dim: int | None = None, whiten: bool = True,
                  normalize: bool = True, minibatch: bool | None = None, n_init: int = 1,
                  max_iter: int = 100) -> torch.Tensor:
    """k-means cluster labels of the rows of ``features`` (N x D tensor or array).

    Args:
        k: number of clusters.
        seed: random state of PCA and k-means (the result is deterministic given it).
        pca_dim: reduce to this many dimensions first (DeepCluster uses 256); None keeps all.
        whiten: whiten in the PCA (as DeepCluster); only used with ``pca_dim``.
        normalize: L2-normalise the rows before k-means (after PCA), as DeepCluster.
        minibatch: use ``MiniBatchKMeans``; default: when N > ``MINIBATCH_THRESHOLD``.
        n_init: k-means++ restarts (the run with the lowest inertia is kept).
        max_iter: iterations per run.

    Returns:
        int64 CPU tensor of N labels in ``[0, k)``.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA

    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must be a non-empty 2-D N x D matrix, got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("features hold NaN or infinite values")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be an integer in [1, N] = [1, {x.shape[0]}], got {k!r}")
    x = x.astype(np.float32, copy=False)

    if pca_dim is not None:
        if not 1 <= pca_dim <= min(x.shape):
            raise ValueError(f"pca_dim must be in [1, min(N, D)] = [1, {min(x.shape)}], got {pca_dim}")
        x = PCA(n_components=pca_dim, whiten=whiten, random_state=seed).fit_transform(x).astype(np.float32)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    if minibatch is None:
        minibatch = x.shape[0] > MINIBATCH_THRESHOLD
    if minibatch:
        km = MiniBatchKMeans(n_clusters=int(k), random_state=seed, n_init=n_init, max_iter=max_iter,
                             batch_size=max(1024, 10 * int(k)))
    else:
        km = KMeans(n_clusters=int(k), random_state=seed, n_init=n_init, max_iter=max_iter)
    return torch.from_numpy(km.fit_predict(x).astype(np.int64))


__all__ = ["kmeans_labels", "MINIBATCH_THRESHOLD"]
