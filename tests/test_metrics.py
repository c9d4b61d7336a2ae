import math

import numpy as np
import pytest
import torch

from sela_edu.evaluation.metrics import (adjusted_nmi, ari, cluster_accuracy, cluster_size_spread, label_change,
                              label_change_nmi, nmi, purity)

TRUE = [0, 0, 1, 1, 2, 2, 2]


def _clusters(rows):
    """Labels from a cluster x class count table: rows[c][j] images of class j in cluster c."""
    true, pred = [], []
    for c, row in enumerate(rows):
        for j, count in enumerate(row):
            true += [j] * count
            pred += [c] * count
    return np.array(true), np.array(pred)


def test_permuted_perfect_clustering_scores_one():
    pred = [2, 2, 0, 0, 1, 1, 1]  # the same partition, clusters renamed
    for fn in (nmi, adjusted_nmi, ari, cluster_accuracy, purity):
        assert fn(TRUE, pred) == pytest.approx(1.0), fn.__name__
    acc, mapping = cluster_accuracy(TRUE, pred, return_mapping=True)
    assert mapping == {2: 0, 0: 1, 1: 2}


def test_independent_2x2_case():
    # Worked by hand: every cluster holds one image of each class. NMI 0; ARI: sum over cells of
    # C(1,2) = 0, rows and columns C(2,2) = 1 each -> expected 2*2/C(4,2) = 2/3, max (2+2)/2 = 2,
    # ARI = (0 - 2/3) / (2 - 2/3) = -1/2.
    true, pred = [0, 0, 1, 1], [0, 1, 0, 1]
    assert nmi(true, pred) == pytest.approx(0.0, abs=1e-12)
    assert ari(true, pred) == pytest.approx(-0.5)
    assert cluster_accuracy(true, pred) == pytest.approx(0.5)
    assert purity(true, pred) == pytest.approx(0.5)
    assert label_change(true, pred) == pytest.approx(0.5)


def test_hungarian_beats_greedy_2x2():
    # Cluster 0: 5 of class 0, 4 of class 1; cluster 1: 4 of class 0. Greedy (cluster 0 -> class 0)
    # gets 5 + 0; the best one-to-one matching (0 -> 1, 1 -> 0) gets 4 + 4 = 8 of 13.
    true, pred = _clusters([[5, 4], [4, 0]])
    acc, mapping = cluster_accuracy(true, pred, return_mapping=True)
    assert acc == pytest.approx(8 / 13)
    assert mapping == {0: 1, 1: 0}
    # Purity lets both clusters take class 0: 5 + 4 = 9 of 13.
    assert purity(true, pred) == pytest.approx(9 / 13)


def test_more_clusters_than_classes():
    # 3 clusters, 2 classes: A = [3, 0], B = [2, 1], C = [0, 4]. One-to-one: A->0, C->1 = 7/10 (B's 3
    # images count as wrong); purity (many-to-one): 3 + 2 + 4 = 9/10.
    true, pred = _clusters([[3, 0], [2, 1], [0, 4]])
    acc, mapping = cluster_accuracy(true, pred, return_mapping=True)
    assert acc == pytest.approx(0.7)
    assert mapping == {0: 0, 2: 1}
    assert purity(true, pred) == pytest.approx(0.9)


def test_fewer_clusters_than_classes():
    true, pred = _clusters([[3, 2]])  # one cluster: the larger class is matched
    assert cluster_accuracy(true, pred) == pytest.approx(0.6)
    assert purity(true, pred) == pytest.approx(0.6)


def test_sparse_ids_and_against_bruteforce():
    # Non-contiguous ids and K != C, checked against trying every injective matching.
    import itertools

    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 60) * 7
    pred = rng.integers(0, 4, 60) * 5 + 3
    best = 0
    classes, clusters = np.unique(true), np.unique(pred)
    for perm in itertools.permutations(clusters, len(classes)):
        best = max(best, sum(np.sum((pred == c) & (true == j)) for c, j in zip(perm, classes)))
    assert cluster_accuracy(true, pred) == pytest.approx(best / 60)


def test_against_sklearn_and_tensor_inputs():
    from sklearn import metrics as skm

    rng = np.random.default_rng(1)
    true = rng.integers(0, 5, 200)
    pred = (true + (rng.random(200) < 0.3) * rng.integers(0, 5, 200)) % 6
    assert nmi(true, pred) == pytest.approx(skm.normalized_mutual_info_score(true, pred))
    assert adjusted_nmi(true, pred) == pytest.approx(skm.adjusted_mutual_info_score(true, pred))
    assert ari(true, pred) == pytest.approx(skm.adjusted_rand_score(true, pred))
    for fn in (nmi, adjusted_nmi, ari, cluster_accuracy, purity, label_change, label_change_nmi):
        assert fn(torch.from_numpy(true), torch.from_numpy(pred)) == pytest.approx(fn(true, pred))
        assert fn(true.tolist(), pred.astype(np.float64)) == pytest.approx(fn(true, pred))
    assert 0 < nmi(true, pred) < 1 and 0 < cluster_accuracy(true, pred) < 1


def test_label_change():
    old = torch.tensor([0, 1, 2, 3])
    assert label_change(old, torch.tensor([0, 1, 3, 2])) == pytest.approx(0.5)
    assert label_change(old, old) == 0.0
    renamed = (old + 1) % 4
    assert label_change(old, renamed) == 1.0  # raw ids all changed ...
    assert label_change_nmi(old, renamed) == pytest.approx(1.0)  # ... but the partition did not


def test_cluster_size_spread():
    # N = 4, K = 4: N/K = 1, sizes [3, 1, 0, 0] -> relative the same; mean 1, variance (4+0+1+1)/4.
    spread = cluster_size_spread(torch.tensor([0, 0, 0, 1]), 4)
    assert spread == pytest.approx({"min": 0.0, "max": 3.0, "std": math.sqrt(1.5), "empty": 2})
    equal = cluster_size_spread(np.repeat(np.arange(5), 7), 5)
    assert equal == pytest.approx({"min": 1.0, "max": 1.0, "std": 0.0, "empty": 0})


@pytest.mark.parametrize("args,match", [
    (([0, 1, 1], [0, 1]), "same length"),
    (([[0, 1], [1, 0]], [0, 1]), "1-D"),
    (([0.5, 1.0], [0, 1]), "integer"),
    (([], []), "empty"),
    ((np.array([True, False]), [0, 1]), "integer"),
])
def test_bad_inputs(args, match):
    for fn in (nmi, ari, cluster_accuracy, purity, label_change):
        with pytest.raises(ValueError, match=match):
            fn(*args)


def test_cluster_size_spread_bad_inputs():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cluster_size_spread([0, 1, 3], 3)
    with pytest.raises(ValueError, match="k must be"):
        cluster_size_spread([0, 1], 0)
