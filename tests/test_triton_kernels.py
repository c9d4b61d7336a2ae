"""The Triton kernels of the label step (``backend="triton"``) against the CPU path, run on the CPU by
triton's interpreter (``TRITON_INTERPRET=1``): odd K, ragged last tiles, several segments (empty ones too),
float32, bfloat16 and float16 storage, a rank's shard, a whole solve, and the launches of one pass."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

# The interpreter must be on before triton itself is imported (its standard library, tl.sum and the like,
# is made of @triton.jit functions, decorated at import): set here, restored when the module's tests end.
_SAVED_ENV = os.environ.get("TRITON_INTERPRET")
if "triton" in sys.modules and _SAVED_ENV in (None, "", "0"):
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set: run this file in its own process",
                allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from sela_edu.labelling import _kernels  # noqa: E402
from sela_edu.labelling import ScoreBuffer, self_label, synthetic_scores  # noqa: E402
from sela_edu.labelling._kernels import passes  # noqa: E402
from sela_edu.labelling._kernels.walk import walk  # noqa: E402

_MODULE = "sela_edu.labelling._kernels.triton_passes"
STORAGE = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(scope="module", autouse=True)
def tk():
    """The kernel module made under the interpreter, and forgotten afterwards (so that a later import on a
    GPU machine makes the compiled kernels, and the environment of other tests is untouched)."""
    saved = _SAVED_ENV
    os.environ["TRITON_INTERPRET"] = "1"
    sys.modules.pop(_MODULE, None)
    if hasattr(_kernels, "triton_passes"):
        delattr(_kernels, "triton_passes")
    try:
        import sela_edu.labelling._kernels.triton_passes as module
        if not module.HAVE_TRITON:
            pytest.skip("triton is not importable")
        yield module
    finally:
        sys.modules.pop(_MODULE, None)
        if hasattr(_kernels, "triton_passes"):
            delattr(_kernels, "triton_passes")
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def problem(n, k, dtype, stops, seed=0):
    g = torch.Generator().manual_seed(seed)
    # entries of P in (0, 1], as formed: the largest of each block's columns is 1
    P = torch.rand(n, k, generator=g).pow(3).clamp_(min=1e-30).to(dtype)
    seg_stop = np.asarray(stops, dtype=np.int64)
    E = torch.rand(len(seg_stop), k, generator=g) * 0.9 + 0.1
    w = torch.rand(k, generator=g) + 0.05
    return P, E, seg_stop, w


SHAPES = [  # (n, K, segment stops): ragged last tiles, odd K, an empty segment, one row segments
    (37, 7, [37]),
    (203, 33, [1, 64, 64, 150, 203]),
    (130, 34, [17, 100, 130]),
]


def cpu_backends(P):
    return ["torch", "numba"] if _kernels.numba_supports(P) and (P.dtype == torch.float32 or P.shape[1] % 2 == 0) \
        else ["torch"]


@pytest.mark.parametrize("dtype", STORAGE, ids=str)
@pytest.mark.parametrize("n, k, stops", SHAPES)
def test_fused_pass_matches_cpu(tk, dtype, n, k, stops):
    P, E, seg_stop, w = problem(n, k, dtype, stops)
    mass, logsum = passes.fused_pass(P, E, seg_stop, w, "triton")
    assert mass.dtype == torch.float64 and mass.shape == (k,)
    assert isinstance(logsum, torch.Tensor) and logsum.dtype == torch.float64
    for backend in cpu_backends(P):
        ref_mass, ref_log = passes.fused_pass(P, E, seg_stop, w, backend)
        torch.testing.assert_close(mass, ref_mass.double(), rtol=2e-5, atol=1e-9)
        assert float(logsum) == pytest.approx(ref_log, rel=1e-5, abs=1e-4)
    # the masses of the row-normalised plan add up to the number of rows
    assert float(mass.sum()) == pytest.approx(n, rel=1e-5)


@pytest.mark.parametrize("dtype", STORAGE, ids=str)
@pytest.mark.parametrize("n, k, stops", SHAPES)
def test_argmax_matches_cpu(tk, dtype, n, k, stops):
    P, E, seg_stop, w = problem(n, k, dtype, stops, seed=1)
    labels = passes.argmax_scaled(P, E, seg_stop, w, "triton")
    assert labels.dtype == torch.int64 and labels.shape == (n,)
    for backend in cpu_backends(P):
        assert torch.equal(labels, passes.argmax_scaled(P, E, seg_stop, w, backend))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_small_tiles_several_per_range(tk, monkeypatch, dtype):
    """Tiles of a few rows, several to a range of the walk, the last of each range ragged."""
    monkeypatch.setattr(tk, "TILE_ENTRIES", 256)  # K = 33: tiles of 4 rows; K = 7: of 32
    monkeypatch.setattr(tk, "TILES_PER_RANGE", 3)  # ranges of at most 12 (96) rows
    for n, k, stops in [(61, 33, [5, 30, 61]), (203, 7, [1, 150, 203])]:
        P, E, seg_stop, w = problem(n, k, dtype, stops, seed=4)
        mass, logsum = passes.fused_pass(P, E, seg_stop, w, "triton")
        ref_mass, ref_log = passes.fused_pass(P, E, seg_stop, w, "torch")
        torch.testing.assert_close(mass, ref_mass, rtol=2e-5, atol=1e-9)
        assert float(logsum) == pytest.approx(ref_log, rel=1e-5, abs=1e-4)
        assert torch.equal(passes.argmax_scaled(P, E, seg_stop, w, "triton"),
                           passes.argmax_scaled(P, E, seg_stop, w, "torch"))


def test_argmax_ties_take_the_first(tk):
    P = torch.ones(9, 5, dtype=torch.bfloat16)
    E, w = torch.ones(1, 5), torch.ones(5)
    assert torch.equal(passes.argmax_scaled(P, E, np.array([9]), w, "triton"), torch.zeros(9, dtype=torch.int64))


def test_a_ranks_rows_add_up_to_the_whole(tk):
    """The distributed label step: each rank runs the same kernel on its own rows (its own segments)."""
    n, k = 150, 33
    P, E, seg_stop, w = problem(n, k, torch.bfloat16, [40, 90, 150], seed=2)
    whole_mass, whole_log = passes.fused_pass(P, E, seg_stop, w, "triton")
    cut = 67  # inside the second segment
    ranks = [(P[:cut], E[:2], np.array([40, cut])), (P[cut:], E[1:], np.array([90 - cut, n - cut]))]
    masses, logs = zip(*(passes.fused_pass(p, e, s, w, "triton") for p, e, s in ranks))
    torch.testing.assert_close(masses[0] + masses[1], whole_mass, rtol=1e-6, atol=1e-9)
    assert float(logs[0] + logs[1]) == pytest.approx(float(whole_log), rel=1e-9)
    labels = torch.cat([passes.argmax_scaled(p, e, s, w, "triton") for p, e, s in ranks])
    assert torch.equal(labels, passes.argmax_scaled(P, E, seg_stop, w, "triton"))


def test_a_pass_is_one_launch_and_no_host_read(tk, monkeypatch):
    P, E, seg_stop, w = problem(203, 33, torch.bfloat16, [64, 150, 203])
    passes.fused_pass(P, E, seg_stop, w, "triton")  # uploads the walk's tiles once
    tk.reset_counts()

    def refuse(*args, **kwargs):
        raise AssertionError("a host read of a device value inside a pass")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"):
            m.setattr(torch.Tensor, name, refuse)
        for _ in range(3):
            passes.fused_pass(P, E, seg_stop, w, "triton")
        passes.argmax_scaled(P, E, seg_stop, w, "triton")
    assert tk.COUNTS == {"launches": 4, "uploads": 0}


def test_the_walk_covers_every_row_once():
    stops = np.array([3, 3, 10, 40, 41, 100])
    for parts, max_rows in [(1, None), (3, None), (7, 8), (1, 16), (200, None)]:
        ranges, first = walk(100, stops, parts, max_rows)
        assert first[0] == 0 and first[-1] == len(ranges) and np.all(np.diff(first) >= 0)
        rows = np.concatenate([np.arange(a, b) for a, b, _ in ranges])
        assert np.array_equal(rows, np.arange(100))
        step = -(-100 // parts)
        for p in range(parts):
            for a, b, seg in ranges[first[p]:first[p + 1]]:
                assert p * step <= a < b <= min(100, (p + 1) * step)
                assert b <= stops[seg] and (seg == 0 or stops[seg - 1] <= a)
                assert max_rows is None or b - a <= max_rows


def solve_both(dtype, n=1500, k=33, lam=25.0, block=400, **kw):
    scores = synthetic_scores(n, k, seed=3) * (10 / lam)

    def buffered():
        buf = ScoreBuffer(n, k, lam, storage_dtype=dtype)
        for i in range(0, n, block):  # several blocks: several segments, each in its own frame
            buf.add(scores[i:i + block])
        return buf

    return self_label(buffered(), backend="triton", **kw), self_label(buffered(), **kw)


@pytest.mark.parametrize("dtype, share", [(torch.float32, 0.999), (torch.bfloat16, 0.99)], ids=str)
def test_a_solve_through_triton_gives_the_cpu_labels(tk, dtype, share):
    tk.reset_counts()
    tri, cpu = solve_both(dtype, method="lbfgs")
    assert tri.converged and cpu.converged
    assert float((tri.labels == cpu.labels).double().mean()) >= share
    assert torch.equal(tri.cluster_sizes, torch.bincount(tri.labels, minlength=33))
    # one launch per pass over P, and one for the labels
    assert tk.COUNTS["launches"] == tri.passes + 1


@pytest.mark.slow
@pytest.mark.parametrize("dtype", STORAGE, ids=str)
def test_a_solve_with_newton_and_odd_k(tk, dtype):
    tri, cpu = solve_both(dtype, n=3000, k=33, block=700)
    assert tri.converged and tri.method == "lbfgs+newton"
    assert float((tri.labels == cpu.labels).double().mean()) >= (0.999 if dtype == torch.float32 else 0.99)


def test_backend_names():
    from sela_edu.labelling.solve import _pick_backend

    with pytest.raises(ValueError, match="'triton'"):
        _pick_backend(torch.zeros(4, 3), "cuda")


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("n, k", [(37, 5), (130, 33), (64, 1)])
@pytest.mark.parametrize("kept", [False, True])
def test_forming_a_block_matches_the_cpu(tk, dtype, n, k, kept):
    """P = exp(lam S - row max - column max), floored, in the storage dtype; the kept scaled scores; the
    column maxima; non-finite scores counted (what the buffer's torch path computes on the CPU)."""
    g = torch.Generator().manual_seed(n * k)
    S = 3 * torch.randn(n, k, generator=g)
    lam = 10.0
    x = lam * S - (lam * S).amax(dim=1, keepdim=True)
    col_expected = x.amax(dim=0)
    expected = (x - col_expected).clamp(min=-87.0).exp()
    out = torch.empty(n, k, dtype=dtype)
    keep = torch.empty(n, k) if kept else None
    tk.reset_counts()
    col, bad = tk.form_block(S, lam, out, keep)
    assert tk.COUNTS["launches"] == 2 and int(bad) == 0
    torch.testing.assert_close(col, col_expected, rtol=1e-6, atol=1e-5)
    tol = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(out.float(), expected.to(dtype).float(), rtol=tol, atol=1e-6)
    if kept:
        torch.testing.assert_close(keep, x, rtol=1e-6, atol=1e-5)
    S[n // 2, 0] = float("nan")
    S[0, k - 1] = float("inf")
    assert int(tk.form_block(S, lam, out, None)[1]) == 2
