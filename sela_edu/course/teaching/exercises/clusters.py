"""Checkers of notebooks 05 to 07: how unequal the clusters are, agreement between two labellings, column
maxima of scores that arrive block by block."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sela_edu.course.teaching.exercises.checking import ExerciseFailure, as_numbers, call_answer, passed, without_kit


# --------------------------------------------------------------------------------------------------
# 05: how unequal are the clusters?


def check_size_spread(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(labels, k) -> (smallest, largest)``: the sizes of the smallest and the largest of the
    ``k`` clusters, each divided by the equal share N/K (so a perfect equipartition gives (1, 1)).
    Clusters that received no image count, with size 0. Compared with
    :func:`sela_edu.evaluation.metrics.cluster_size_spread`."""
    from sela_edu.evaluation.metrics import cluster_size_spread

    rng = np.random.default_rng(5)
    problems = [
        ("an equipartition", np.repeat(np.arange(4), 5), 4),
        ("labels where clusters 2 and 5 are empty", rng.choice([0, 1, 3, 4], size=60, p=[0.4, 0.3, 0.2, 0.1]), 6),
        ("random labels", rng.integers(0, 8, size=100), 8),
    ]
    for name, labels, k in problems:
        spread = cluster_size_spread(labels, k)
        want = (spread["min"], spread["max"])
        with without_kit(fn, cluster_size_spread, exercise="size_spread"):
            out = call_answer(fn, labels.copy(), k, what="size_spread")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ExerciseFailure("return two numbers: (smallest, largest)")
        got = tuple(float(as_numbers(v, "each size").max()) for v in out)
        if np.allclose(got, want):
            continue
        share = labels.size / k
        if np.allclose(got, want[::-1]):
            raise ExerciseFailure("your two numbers are swapped: return (smallest, largest)")
        if np.allclose(got, (want[0] * share, want[1] * share)):
            raise ExerciseFailure(f"on {name} you returned raw counts {got}: divide by the equal share N/K = {share:g}")
        if np.allclose(got, (want[0] / k, want[1] / k)):
            raise ExerciseFailure(f"on {name} you divided by N: the equal share of a cluster is N/K = {share:g}")
        if want[0] == 0 and got[0] > 0:
            raise ExerciseFailure(
                f"on {name} your smallest size is {got[0]:.3g}, but some clusters got no image, so it is 0: "
                "count with np.bincount(labels, minlength=k) (np.unique and plain bincount skip empty clusters)")
        raise ExerciseFailure(f"on {name} you returned {np.round(got, 4)}, expected {np.round(want, 4)} "
                              f"(sizes {np.bincount(labels, minlength=k).tolist()}, equal share {share:g})")
    return passed("sizes are counted for all K clusters and compared with N/K.", quiet)


# --------------------------------------------------------------------------------------------------
# 06: agreement between two labellings


def check_matched_agreement(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(labels_a, labels_b) -> fraction``: cluster ids are arbitrary names, so two labellings
    agree on an image when ``b``'s cluster is matched to ``a``'s; the match is one to one (each id of b
    to at most one id of a) and chosen to maximise the agreement (the Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``). Returns a fraction in [0, 1]. Compared with
    :func:`sela_edu.evaluation.metrics.cluster_accuracy`."""
    from sela_edu.evaluation.metrics import cluster_accuracy, purity

    rng = np.random.default_rng(6)
    a = rng.permutation(np.repeat(np.arange(5), 40))
    rename = np.array([3, 1, 4, 0, 2])
    b = rename[a]                                   # the same partition under other names
    noisy = b.copy()
    flip = rng.random(a.size) < 0.2
    noisy[flip] = rng.integers(0, 5, size=int(flip.sum()))
    split = noisy.copy()
    split[(a == 0) & (rng.random(a.size) < 0.5)] = 5   # one class split over two clusters: purity > one-to-one
    for name, x, y in (("a renamed copy", a, b), ("a renamed copy with 20 % noise", a, noisy),
                       ("labels with one class split in two clusters", a, split)):
        want = cluster_accuracy(x, y)
        with without_kit(fn, cluster_accuracy, exercise="matched_agreement"):
            out = call_answer(fn, x.copy(), y.copy(), what="matched_agreement")
        got = as_numbers(out, "the agreement")
        if got.size != 1:
            raise ExerciseFailure(f"return one number (a fraction), got shape {got.shape}")
        got = float(got.ravel()[0])
        if np.isclose(got, want):
            continue
        if np.isclose(got, 100 * want):
            raise ExerciseFailure("that is a percentage: return a fraction in [0, 1]")
        if np.isclose(got, float(np.mean(x == y))):
            raise ExerciseFailure(f"on {name} you compared the ids directly ({got:.2f}): cluster ids are arbitrary, "
                                  "match the clusters first (linear_sum_assignment on the co-occurrence counts)")
        if np.isclose(got, max(purity(x, y), purity(y, x))):
            raise ExerciseFailure(f"on {name} you matched each cluster to its majority class ({got:.3f}): two "
                                  "clusters may then share one class; the match must be one to one (Hungarian)")
        if np.isclose(got, 1 - want):
            raise ExerciseFailure("you returned the disagreement: return the fraction of images that agree")
        raise ExerciseFailure(f"on {name} you returned {got:.4f}, expected {want:.4f}: count co-occurrences of "
                              "(a, b) pairs, find the one-to-one match with the largest total "
                              "(linear_sum_assignment(..., maximize=True)) and divide by N")
    return passed("ids are matched one to one before counting agreement.", quiet)


# --------------------------------------------------------------------------------------------------
# 07: streaming column maxima


def check_column_max(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(blocks) -> maxima``: ``blocks`` is an iterator (read it once) of n_i x K score
    tensors, the rows of an N x K matrix that never exists whole; return the K column maxima, as the
    solver's :class:`~sela_edu.labelling.ScoreBuffer` does before it forms ``exp(scores - max)``."""
    import torch

    g = torch.Generator().manual_seed(7)
    problems = [
        ("scores of both signs", [torch.randn(m, 6, generator=g) for m in (5, 3, 8)]),
        ("all-negative scores (log-probabilities)", [-torch.rand(m, 4, generator=g) - 0.5 for m in (4, 4, 2)]),
        ("one block", [torch.randn(7, 3, generator=g)]),
    ]
    for name, blocks in problems:
        whole = torch.cat(blocks)
        want = whole.amax(dim=0)
        out = call_answer(fn, iter([b.clone() for b in blocks]), what="column_max")
        got = torch.as_tensor(as_numbers(out, "the maxima"))
        if got.shape != want.shape:
            hint = (" (that is one value per row: take the maximum over rows, dim=0, one per cluster)"
                    if got.numel() in (whole.shape[0], blocks[-1].shape[0]) else "")
            raise ExerciseFailure(f"expected {want.numel()} column maxima, got shape {tuple(got.shape)}{hint}")
        if torch.allclose(got, want.double()):
            continue
        if torch.allclose(got, blocks[-1].amax(0).double()):
            raise ExerciseFailure("you kept only the last block's maxima: keep a running maximum across blocks "
                                  "(torch.maximum(running, block.amax(0)))")
        if (want < 0).all() and torch.allclose(got, torch.zeros_like(got)):
            raise ExerciseFailure(f"on {name} you returned zeros: you started the running maximum at 0, which beats "
                                  "every negative score; start from -inf (or the first block)")
        raise ExerciseFailure(f"on {name} you returned {got.numpy().round(3)}, expected {want.numpy().round(3)}")
    return passed("a running maximum over the blocks gives the column maxima without the whole matrix.", quiet)
