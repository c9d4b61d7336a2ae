"""Benchmark of the self-labelling solver against the machine's memory bandwidth and the float64 reference.

    .venv/bin/python benchmarks/bench_sinkhorn.py            # all sizes that fit in memory
    .venv/bin/python benchmarks/bench_sinkhorn.py --sizes 50000x1000 --no-reference
    python benchmarks/bench_sinkhorn.py --device cuda --sizes 1280000x3000   # on a GPU machine

What it prints, per N x K (scores are standard normal logits, lambda 25):
  * the solver end to end (forming P from the scores included), its iterations, and milliseconds per
    iteration measured on its own;
  * the time to read P twice at the measured bandwidth (the budget: an iteration should take at most 1.5x
    that), and the share of bandwidth-bound speed reached (bytes of P read per second / bandwidth);
  * the float64 reference (the published algorithm in numpy) end to end, the speed-up over it, and the
    share of labels on which the two agree.
Sizes whose matrices do not fit in memory are skipped with a note. ImageNet scale (1.28M x 3000) is fed
block by block through a ScoreBuffer, as the trainer does, since the scores and P would not fit together.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np


def measure_bandwidth(repeats: int = 5) -> dict:
    """Read bandwidth in GB/s: the best of a multi-threaded BLAS matrix-vector product and a plain sum."""
    a = np.random.default_rng(0).random((5000, 10000))  # 400 MB of float64, far beyond every cache
    x = np.ones(10000)
    best_mv = min(_timed(lambda: a @ x) for _ in range(repeats))
    best_sum = min(_timed(lambda: a.sum()) for _ in range(repeats))
    gb = a.nbytes / 1e9
    out = {"blas_matvec": gb / best_mv, "sum": gb / best_sum}
    out["best"] = max(out.values())
    del a
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_size(n: int, k: int, lam: float, bandwidth: float, storage: str, reference: bool, seed: int = 0,
               device: str = "cpu") -> dict:
    import torch

    from sela_edu import _kernels
    from sela_edu.sinkhorn import ScoreBuffer, reference_self_label, self_label

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[storage]
    itemsize = 4 if storage == "float32" else 2
    p_bytes = n * k * itemsize
    free = available_memory_bytes() if device == "cpu" else torch.cuda.mem_get_info()[0]
    dense = n * k * 4 * 2 + p_bytes < 0.8 * free  # scores + a float32 copy + P
    if not dense and p_bytes + 4 * 2**30 > free:
        return {"skipped": f"P alone needs {p_bytes / 1e9:.1f} GB"}
    g = torch.Generator(device=device).manual_seed(seed)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    row = {"N": n, "K": k, "storage": storage}
    if dense:
        scores = torch.randn(n, k, generator=g, device=device)
        sync()
        start = time.perf_counter()
        result = self_label(scores, lam, storage_dtype=dtype)
        sync()
        row["seconds"] = time.perf_counter() - start
        row["mode"] = "dense"
    else:  # stream blocks into the buffer; generating the random blocks is not timed
        buf = ScoreBuffer(n, k, lam, storage_dtype=dtype, device=device)
        block = 8192
        add_seconds = 0.0
        for start_row in range(0, n, block):
            chunk = torch.randn(min(block, n - start_row), k, generator=g, device=device)
            sync()
            t0 = time.perf_counter()
            buf.add(chunk)
            sync()
            add_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        result = self_label(buf)
        sync()
        row["seconds"] = add_seconds + time.perf_counter() - t0
        row["mode"] = "streamed"
        scores = None
    row.update(iterations=result.iterations, error=result.error, converged=result.converged)

    # one iteration on its own: the fused pass over P plus the K-vector updates
    P = buf.storage if scores is None else _storage_of(scores, lam, dtype)
    backend = "numba" if _kernels.numba_supports(P) and P.numel() >= _kernels.NUMBA_MIN_ENTRIES else "torch"
    b = torch.ones(k, device=P.device if backend == "torch" else "cpu")
    _kernels.column_sums(P, b, backend)
    reps = 5 if n * k < 5e8 else 2
    per_iter = min(_timed(lambda: (_kernels.column_sums(P, b, backend), sync())) for _ in range(reps))
    row["ms_per_iter"] = per_iter * 1e3
    read_twice = 2 * p_bytes / (bandwidth * 1e9)
    row["budget_ratio"] = per_iter / read_twice  # target: <= 1.5
    row["bandwidth_share"] = p_bytes / per_iter / (bandwidth * 1e9)
    row["backend"] = backend
    del P
    gc.collect()

    if reference and scores is not None and n * k * 8 * 3 < 0.8 * available_memory_bytes():
        s64 = scores.cpu().numpy()
        start = time.perf_counter()
        ref = reference_self_label(s64, lam, tol=1e-2)
        row["reference_seconds"] = time.perf_counter() - start
        row["reference_iterations"] = ref.iterations
        row["speedup"] = row["reference_seconds"] / row["seconds"]
        row["label_agreement"] = float((ref.labels == result.labels.cpu().numpy()).mean())
    return row


def _storage_of(scores, lam, dtype):
    from sela_edu.sinkhorn import ScoreBuffer

    buf = ScoreBuffer(scores.shape[0], scores.shape[1], lam, storage_dtype=dtype, device=scores.device)
    buf.add(scores)
    return buf.finalise()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000x128,50000x1000,250000x1000,1280000x3000")
    parser.add_argument("--lam", type=float, default=25.0)
    parser.add_argument("--storage", default="float32,bfloat16")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to time the GPU path (bandwidth is then the CPU's)")
    args = parser.parse_args(argv)

    bw = measure_bandwidth()
    import torch

    from sela_edu import _kernels

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numba kernels: {_kernels.HAVE_NUMBA}")
    print(f"read bandwidth: BLAS matvec {bw['blas_matvec']:.1f} GB/s, sum {bw['sum']:.1f} GB/s -> using {bw['best']:.1f} GB/s")
    header = (f"{'N x K':>14} {'storage':>8} {'mode':>8} {'iters':>5} {'err':>8} {'total s':>8} {'ms/iter':>8} "
              f"{'iter/2reads':>11} {'BW share':>8} {'ref s':>7} {'ref it':>6} {'speed-up':>8} {'agree':>7}")
    print(header)
    for size in args.sizes.split(","):
        n, k = (int(v) for v in size.lower().split("x"))
        for storage in args.storage.split(","):
            row = bench_size(n, k, args.lam, bw["best"], storage, reference=not args.no_reference and storage == "float32",
                             device=args.device)
            if "skipped" in row:
                print(f"{size:>14} {storage:>8}  skipped: {row['skipped']}")
                continue
            ref = (f"{row['reference_seconds']:7.2f} {row['reference_iterations']:6d} {row['speedup']:7.1f}x "
                   f"{row['label_agreement']:7.4f}") if "speedup" in row else f"{'-':>7} {'-':>6} {'-':>8} {'-':>7}"
            print(f"{size:>14} {storage:>8} {row['mode']:>8} {row['iterations']:5d} {row['error']:8.1e} "
                  f"{row['seconds']:8.2f} {row['ms_per_iter']:8.1f} {row['budget_ratio']:11.2f} "
                  f"{row['bandwidth_share']:8.2f} {ref}")
            sys.stdout.flush()
            gc.collect()


if __name__ == "__main__":
    main()
