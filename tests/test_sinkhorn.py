"""The label-optimisation solver against the published algorithm, POT, and its own invariances."""

from __future__ import annotations

import os
import socket

import numpy as np
import ot
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sela_edu import sinkhorn as sk
from sela_edu.sinkhorn import ScoreBuffer, reference_self_label, self_label, sinkhorn


def random_scores(n, k, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * scale


def soft_plan(scores, lam, result):
    """The solver's plan, rebuilt in float64 from its cluster potentials (rows sum to 1)."""
    logits = lam * scores.double() + result.cluster_potential
    return torch.softmax(logits, dim=1)


# shapes x sharpness: (N, K, score scale, lam)
PROBLEMS = [
    (1000, 10, 1.0, 10.0),
    (3000, 50, 3.0, 10.0),
    (10000, 128, 1.0, 25.0),
    (4000, 300, 0.3, 25.0),
]


@pytest.mark.parametrize("n,k,scale,lam", PROBLEMS)
def test_labels_agree_with_float64_reference(n, k, scale, lam):
    scores = random_scores(n, k, scale)
    ours = self_label(scores, lam)
    ref = reference_self_label(scores.numpy(), lam, tol=1e-5)
    assert ours.converged and ref.converged
    agreement = (ours.labels.numpy() == ref.labels).mean()
    assert agreement >= 0.999, f"only {agreement:.4%} of labels agree with the float64 reference"


@pytest.mark.parametrize("n,k,scale,lam", PROBLEMS[:3])
def test_marginals_met_within_tol(n, k, scale, lam):
    scores = random_scores(n, k, scale, seed=1)
    tol = 1e-3
    result = self_label(scores, lam, tol=tol)
    Q = soft_plan(scores, lam, result)
    mass = Q.sum(dim=0)
    assert torch.allclose(Q.sum(dim=1), torch.ones(n, dtype=torch.float64))
    rel = ((mass - n / k).abs() / (n / k)).max().item()
    assert rel <= tol * 1.01, f"cluster masses off by {rel:.2e} > tol {tol}"
    assert result.error <= tol
    # hard labels are the argmax of the plan's rows
    assert torch.equal(Q.argmax(dim=1), result.labels)


def test_prior_sets_cluster_masses():
    n, k = 6000, 4
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    scores = random_scores(n, k, 0.5, seed=2)
    result = self_label(scores, 10.0, prior=prior, tol=1e-4)
    mass = soft_plan(scores, 10.0, result).sum(dim=0) / n
    assert torch.allclose(mass, prior.double(), rtol=1e-3)
    sizes = result.cluster_sizes.double() / n
    assert torch.allclose(sizes, prior.double(), atol=0.03)


def test_invariant_to_row_and_column_constants():
    scores = random_scores(5000, 64, 2.0, seed=3)
    base = self_label(scores, 10.0, tol=1e-5).labels
    g = torch.Generator().manual_seed(9)
    shifted = scores + 50 * torch.randn(5000, 1, generator=g) + 3 * torch.randn(1, 64, generator=g)
    moved = self_label(shifted, 10.0, tol=1e-5).labels
    assert (base == moved).float().mean() >= 0.999


@pytest.mark.parametrize("scale,lam", [(1.0, 10.0), (5.0, 25.0)])
def test_cluster_sizes_near_equal(scale, lam):
    n, k = 20000, 100
    result = self_label(random_scores(n, k, scale, seed=4), lam)
    sizes = result.cluster_sizes
    assert int(sizes.sum()) == n
    assert sizes.min() >= 0.8 * n / k and sizes.max() <= 1.2 * n / k, sizes


def test_streaming_equals_one_shot(monkeypatch):
    # a small staging area forces many blocks, each with its own column shift to reconcile
    monkeypatch.setattr(sk, "_STAGE_BYTES", 64 * 40 * 4)
    n, k, lam = 3001, 40, 25.0
    scores = random_scores(n, k, 3.0, seed=5)
    # blocks with very different ranges, so per-block column maxima really differ
    scores[:1000] -= 4.0
    one_shot = self_label(scores, lam, tol=1e-6)
    buf = ScoreBuffer(n, k, lam)
    for start, stop in [(0, 1), (1, 700), (700, 2048), (2048, 3001)]:
        buf.add(scores[start:stop].half() if start == 700 else scores[start:stop])
    # half-precision input on one block changes its scores slightly; compare on the rest
    streamed = self_label(buf, tol=1e-6)
    same = (streamed.labels == one_shot.labels).float()
    assert same[:700].mean() >= 0.999 and same[2048:].mean() >= 0.999 and same.mean() >= 0.995
    buf2 = ScoreBuffer(n, k, lam)
    for start in range(0, n, 97):
        buf2.add(scores[start : start + 97])
    assert (self_label(buf2, tol=1e-6).labels == one_shot.labels).float().mean() >= 0.999


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_storage_matches_float32(dtype):
    scores = random_scores(20000, 128, 1.0, seed=6)
    full = self_label(scores, 25.0)
    half = self_label(scores, 25.0, storage_dtype=dtype)
    assert half.converged
    assert (full.labels == half.labels).float().mean() >= 0.998


def test_numba_and_torch_backends_agree():
    scores = random_scores(8000, 100, 2.0, seed=7)
    a = self_label(scores, 10.0, backend="numba")
    b = self_label(scores, 10.0, backend="torch")
    assert (a.labels == b.labels).float().mean() >= 0.9995
    c = self_label(scores, 10.0, backend="torch", storage_dtype=torch.bfloat16)
    assert (a.labels == c.labels).float().mean() >= 0.998


def test_several_heads_give_one_result_each():
    heads = [random_scores(500, k, 1.0, seed=k) for k in (5, 10, 20)]
    results = self_label(heads, 10.0)
    assert [len(r.cluster_sizes) for r in results] == [5, 10, 20]
    assert all(r.labels.shape == (500,) and r.labels.dtype == torch.int64 for r in results)


def test_sharp_scores_and_dead_clusters_give_valid_labels():
    # lam * scores spans hundreds: exp without the row/column shift would overflow or underflow
    scores = random_scores(2000, 20, 8.0, seed=8)
    result = self_label(scores, 25.0, max_iter=5000)
    assert result.converged and result.labels.min() >= 0 and result.labels.max() < 20
    assert int(result.cluster_sizes.sum()) == 2000
    dead = random_scores(2000, 20, 1.0, seed=8)
    dead[:, 3] -= 30.0  # a cluster no image likes: exp(25 * -30) underflows even in float64
    result = self_label(dead, 25.0)
    assert result.converged and result.cluster_sizes[3] > 0.8 * 100


def test_very_sharp_problem_rebuilds_p_and_matches_reference():
    # lam * scores spans ~1000 nats: the cluster scalings must spread beyond float32's range, so the
    # solver rebuilds P with them absorbed (from the kept scores) and still agrees with float64
    scores = random_scores(3000, 100, 3.0, seed=11)
    ours = self_label(scores, 100.0, max_iter=20000)
    ref = reference_self_label(scores.numpy(), 100.0, tol=1e-3, max_iter=20000)
    assert ours.converged and ours.rebuilds >= 1
    assert (ours.labels.numpy() == ref.labels).mean() >= 0.999


def test_hopelessly_sharp_scores_never_give_nan():
    scores = random_scores(2000, 20, 200.0, seed=8)
    # without the scores to rebuild from, the solver says what is wrong instead of returning NaN
    with pytest.raises(FloatingPointError, match="too sharp for lam=25"):
        self_label(scores, 25.0, max_iter=5000, keep_scores=False)
    # with them it keeps going: balanced labels, honestly reported as not converged
    with pytest.warns(RuntimeWarning, match="not converged"):
        result = self_label(scores, 25.0, max_iter=2000)
    assert not result.converged and np.isfinite(result.error)
    assert result.cluster_sizes.min() >= 90 and result.cluster_sizes.max() <= 110


@pytest.mark.slow
def test_published_stop_rule_fails_in_float32_at_large_n_but_ours_does_not():
    rng = np.random.default_rng(0)
    k, lam = 8, 10.0
    small = rng.standard_normal((10_000, k)).astype(np.float32)
    assert reference_self_label(small, lam, tol=1e-2, max_iter=300, dtype=np.float32).converged
    large = rng.standard_normal((200_000, k)).astype(np.float32)
    published = reference_self_label(large, lam, tol=1e-2, max_iter=300, dtype=np.float32)
    # its sum over N of float32 rounding noise stays above the tolerance however long it runs
    assert not published.converged and published.error > 1e-2
    ours = self_label(torch.from_numpy(large), lam, tol=1e-3)
    assert ours.converged and ours.iterations < 100


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(scores=torch.tensor([[0.0, float("nan")], [1.0, 2.0]])), "non-finite"),
        (dict(scores=torch.tensor([[0.0, float("inf")], [1.0, 2.0]])), "non-finite"),
        (dict(scores=torch.zeros(10, 1)), "at least 2 clusters"),
        (dict(scores=torch.zeros(3, 5)), "fewer images"),
        (dict(scores=torch.zeros(10)), "N x K"),
        (dict(scores=torch.zeros(2, 10, 3)), "N x K"),
        (dict(scores=torch.zeros(10, 2), lam=0.0), "lam"),
        (dict(scores=torch.zeros(10, 2), lam=-1.0), "lam"),
        (dict(scores=torch.zeros(10, 2), lam=float("nan")), "lam"),
        (dict(scores=torch.zeros(10, 2), prior=[0.5, 0.6]), "sum to 1"),
        (dict(scores=torch.zeros(10, 2), prior=[1.5, -0.5]), "negative"),
        (dict(scores=torch.zeros(10, 3), prior=[0.5, 0.5]), "3 cluster proportions"),
        (dict(scores=torch.zeros(10, 2), tol=0), "tol"),
        (dict(scores=torch.zeros(10, 2, dtype=torch.int64)), "floating point"),
    ],
)
def test_bad_input_raises(kwargs, match):
    kwargs.setdefault("lam", 10.0)
    with pytest.raises(ValueError, match=match):
        self_label(**kwargs)


def test_score_buffer_refuses_wrong_use():
    buf = ScoreBuffer(10, 3, 10.0)
    with pytest.raises(ValueError, match="n x 3"):
        buf.add(torch.zeros(4, 2))
    buf.add(torch.zeros(6, 3))
    with pytest.raises(ValueError, match="too many rows"):
        buf.add(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="only 6 of"):
        self_label(buf)
    with pytest.raises(ValueError, match="storage_dtype"):
        ScoreBuffer(10, 3, 10.0, storage_dtype=torch.float64)
    full = ScoreBuffer(10, 3, 10.0)
    full.add(torch.randn(10, 3))
    with pytest.raises(ValueError, match="lam=5"):
        self_label(full, 5.0)


# ------------------------------------------------------------------------------------------------
# distributed: two CPU processes with gloo


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, scores, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mine = scores[rank::world]  # interleaved rows, as a DistributedSampler hands them out
        buf = ScoreBuffer(len(mine), scores.shape[1], 25.0)
        for start in range(0, len(mine), 256):
            buf.add(mine[start : start + 256])
        result = self_label(buf)
        out[rank] = (result.labels, result.iterations, result.cluster_sizes)
    finally:
        dist.destroy_process_group()


def test_distributed_equals_single_process():
    scores = random_scores(6001, 50, 2.0, seed=10)
    scores[::2] += 0.5  # the two ranks see different score ranges
    single = self_label(scores, 25.0)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank_main, args=(2, _free_port(), scores, out), nprocs=2, join=True)
    labels = torch.empty(6001, dtype=torch.int64)
    for rank in range(2):
        labels[rank::2] = out[rank][0]
    assert out[0][1] == out[1][1], "ranks stopped after different numbers of iterations"
    assert torch.equal(out[0][2], out[1][2]) and int(out[0][2].sum()) == 6001
    assert (labels == single.labels).float().mean() >= 0.999


# ------------------------------------------------------------------------------------------------
# the general OT solver used by the teaching notebooks


def _toy_problem(n=6, m=5, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((m, 2))
    cost = ot.dist(x, y)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return cost, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.05])
def test_general_sinkhorn_matches_pot(eps):
    cost, a, b = _toy_problem()
    ours, log = sinkhorn(cost, a, b, eps, tol=1e-12, max_iter=10000, return_log=True)
    theirs = ot.sinkhorn(a, b, cost, eps, stopThr=1e-12, numItermax=100000)
    assert isinstance(ours, np.ndarray)
    np.testing.assert_allclose(ours, theirs, atol=1e-8)
    np.testing.assert_allclose(ours.sum(1), a, atol=1e-10)
    assert log["err"][-1] < 1e-12 and log["iterations"] == len(log["err"])


def test_general_sinkhorn_approaches_exact_ot():
    cost, a, b = _toy_problem(8, 8, seed=1)
    exact = ot.emd(a, b, cost)
    gaps = [abs(np.sum(sinkhorn(cost, a, b, eps, max_iter=50000) * cost) - np.sum(exact * cost)) for eps in (0.5, 0.05, 0.005)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-2
    np.testing.assert_allclose(sinkhorn(cost, a, b, 1e-3, max_iter=100000), exact, atol=2e-3)


def test_general_sinkhorn_torch_in_torch_out_and_bad_input():
    cost, a, b = _toy_problem()
    plan = sinkhorn(torch.from_numpy(cost), torch.from_numpy(a), torch.from_numpy(b), 0.1)
    assert isinstance(plan, torch.Tensor)
    with pytest.raises(ValueError, match="same total mass"):
        sinkhorn(cost, a, b * 2, 0.1)
    with pytest.raises(ValueError, match="eps"):
        sinkhorn(cost, a, b, 0.0)
    with pytest.raises(ValueError, match="n x m"):
        sinkhorn(cost, a[:-1], b, 0.1)
