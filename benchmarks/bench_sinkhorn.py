"""Benchmark of the label-step solver against the machine's memory bandwidth and a float64 reference.

    .venv/bin/python benchmarks/bench_sinkhorn.py                       # everything (ImageNet scale included)
    .venv/bin/python benchmarks/bench_sinkhorn.py --sizes 50000x1000 --kinds realistic --no-reference
    python benchmarks/bench_sinkhorn.py --device cuda --sizes 1280000x3000   # on a GPU machine

Score kinds (lambda 25 unless --lam):
  * ``normal``: standard-normal logits, easy (tens of plain Sinkhorn iterations); the kit's earlier
    benchmark used them, so their rows carry the earlier figures (``old it``, ``old s``) beside the new;
  * ``realistic``: :func:`sela_edu.labelling.synthetic_scores`, calibrated on recorded scores of the kit's
    own network at lambda 10 (hundreds of plain iterations): the hard case. At another lambda they are
    scaled by 10 / lambda, so that lambda * scores, the problem the solver sees, is the calibrated one
    (unscaled, lambda 25 would stretch logit gaps of 4-6 to 100-150 nats: beyond what float32 storage of
    P can represent without the kept scores, which ImageNet scale cannot afford here);
  * ``recorded``: the recorded scores themselves (``benchmarks/scores/*.npz``, every head), lambda as
    recorded, solved both by L-BFGS and by plain Sinkhorn.

Per row: passes over P (the default solver: L-BFGS, which Newton's method finishes up to 256 clusters),
the cluster-mass error reached, seconds end to end (forming
P from the scores included), seconds forming P and its floor (the larger of one read of the float32 scores
plus one write of P at the measured bandwidths, and forming every entry at the rate measured on a block
in cache: the kernel overlaps the two, so neither alone can be beaten). Where no
reference is kept, P is formed twice in the same buffer: "form s" and "total s" are the second fill (what
every label optimisation after the first costs, the trainer resetting its buffers), "1st form" and "1st
total" the first, which also pays for the system handing over fresh memory (its rate is printed); the
time of one pass on its own against one read of P at the measured read bandwidth (target: at most 1.5x)
and of the argmax that gives the labels (one more read of P), and, where a float64 matrix fits, the share
of labels on which the result agrees with the published
algorithm in numpy float64 (``reference_self_label``, tol 1e-3 here). ImageNet scale (1.28M x 3000) is
fed block by block through a ScoreBuffer in bfloat16, as the trainer does.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings

import numpy as np

# The kit's earlier solver (plain Sinkhorn-Knopp, P formed then rescaled), same sizes, standard-normal
# logits, lambda 25, on this machine: (iterations, seconds end to end). From docs/bench_sinkhorn_output.txt.
OLD = {
    ("50000x128", "float32"): (49, 0.60), ("50000x128", "bfloat16"): (49, 0.12),
    ("50000x1000", "float32"): (68, 1.00), ("50000x1000", "bfloat16"): (68, 0.88),
    ("250000x1000", "float32"): (42, 3.38), ("250000x1000", "bfloat16"): (42, 4.41),
    ("1280000x3000", "float32"): (37, 57.84), ("1280000x3000", "bfloat16"): (37, 44.53),
}


# synthetic_scores is calibrated on recorded scores solved at this lambda (benchmarks/scores)
CALIBRATION_LAM = 10.0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_machine(repeats: int = 5) -> dict:
    """Read and write bandwidth (GB/s) and the compiled exp's rate (entries/s) on this machine."""
    import torch

    from sela_edu.labelling import _kernels

    a = np.random.default_rng(0).random((5000, 10000))  # 400 MB of float64, far beyond every cache
    x = np.ones(10000)
    gb = a.nbytes / 1e9
    out = {"read_blas": gb / min(_timed(lambda: a @ x) for _ in range(repeats)),
           "read_sum": gb / min(_timed(lambda: a.sum()) for _ in range(repeats))}
    out["read"] = max(out["read_blas"], out["read_sum"])
    t = torch.from_numpy(a)
    out["write"] = gb / min(_timed(lambda: t.fill_(1.0)) for _ in range(repeats))  # torch fills on all threads
    del a, t
    # first write of memory the process never touched: each page is faulted in and zeroed by the system
    start = time.perf_counter()
    fresh = torch.empty(2**30, dtype=torch.uint8)
    fresh.fill_(1)
    out["first_touch"] = 2**30 / 1e9 / (time.perf_counter() - start)
    del fresh
    # exp rate: forming P from a cache-resident block (row/column maxima, exp, bfloat16 store), minus nothing
    s = torch.randn(512, 2048)
    p = torch.empty(512, 2048, dtype=torch.bfloat16)
    if _kernels.HAVE_NUMBA:
        _kernels.form_block(s, 25.0, p, None)  # compile
        best = min(_timed(lambda: [_kernels.form_block(s, 25.0, p, None) for _ in range(20)]) for _ in range(repeats))
        out["exp_rate"] = 20 * s.numel() / best
    else:
        out["exp_rate"] = s.numel() / min(_timed(lambda: s.exp()) for _ in range(repeats))
    return out


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _scores(kind: str, n: int, k: int, offset: int, device: str, lam: float, seed: int = 0):
    import torch

    from sela_edu.labelling import synthetic_scores

    if kind == "normal":
        g = torch.Generator().manual_seed(seed * 1_000_003 + offset)
        return torch.randn(n, k, generator=g).to(device)
    # calibrated at lambda 10: scaled by 10 / lam, lam * scores (the problem in nats) is the calibrated one
    return synthetic_scores(n, k, seed=seed, offset=offset).mul_(CALIBRATION_LAM / lam).to(device)


def bench_size(kind: str, n: int, k: int, lam: float, machine: dict, storage: str, reference: bool,
               device: str = "cpu") -> dict:
    import torch

    from sela_edu.labelling import _kernels
    from sela_edu.labelling import ScoreBuffer, reference_self_label, self_label
    from sela_edu.labelling.solve import _pick_backend

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[storage]
    itemsize = 4 if storage == "float32" else 2
    p_bytes = n * k * itemsize
    free = available_memory_bytes() if device == "cpu" else torch.cuda.mem_get_info()[0]
    if p_bytes + 2 * 2**30 > free:
        return {"skipped": f"P alone needs {p_bytes / 1e9:.1f} GB"}
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    row = {"N": n, "K": k, "storage": storage}
    block = 8192 if n * k > 2e8 else n
    dense = block == n
    buf = ScoreBuffer(n, k, lam, storage_dtype=dtype, device=device, keep_scores=False if not dense else None)
    backend = _pick_backend(buf.storage, "auto")  # the solver's own choice: numba, triton (CUDA) or torch
    kept = [] if (reference and dense) else None

    def fill() -> float:
        seconds = 0.0
        for start_row in range(0, n, block):  # generating the scores is not timed
            chunk = _scores(kind, min(block, n - start_row), k, start_row, device, lam)
            if kept is not None:
                kept.append(chunk)
            sync()
            t0 = time.perf_counter()
            buf.add(chunk)
            sync()
            seconds += time.perf_counter() - t0
            del chunk
        t0 = time.perf_counter()
        buf.finalise(fold=backend == "torch")
        sync()
        return seconds + time.perf_counter() - t0

    # the first fill writes fresh memory; the trainer resets and refills its buffers after that
    first_form_seconds = fill()
    if kept is None:
        buf.reset()
        form_seconds = fill()
    else:  # small sizes: no second fill (the float64 reference keeps the one set of scores)
        form_seconds = first_form_seconds
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = self_label(buf)
    sync()
    row["solve_seconds"] = time.perf_counter() - t0
    row["form_seconds"] = form_seconds
    row["first_form_seconds"] = first_form_seconds
    row["seconds"] = form_seconds + row["solve_seconds"]
    row["first_seconds"] = first_form_seconds + row["solve_seconds"]
    row["mode"] = "dense" if dense else "streamed"
    row.update(passes=result.passes, error=result.error, converged=result.converged, rebuilds=result.rebuilds)
    gb = 1e9
    mem_floor = (n * k * 4) / (machine["read"] * gb) + p_bytes / (machine["write"] * gb)
    exp_floor = n * k / machine["exp_rate"]
    row["form_floor"] = max(mem_floor, exp_floor)  # the kernel overlaps its memory traffic with the exp
    row["form_floor_parts"] = (mem_floor, exp_floor)

    # one pass on its own, on the P the solver used (blocks in their own frames on the numba path)
    P = buf.storage
    vec_device = "cpu" if backend == "numba" else P.device
    E = buf.segment_shift.to(vec_device).exp()
    w = torch.ones(k, device=vec_device)
    _kernels.fused_pass(P, E, buf.segment_stops, w, backend)
    reps = 5 if n * k < 5e8 else 3
    per_pass = min(_timed(lambda: (_kernels.fused_pass(P, E, buf.segment_stops, w, backend), sync())) for _ in range(reps))
    row["ms_per_pass"] = per_pass * 1e3
    row["ms_argmax"] = 1e3 * min(_timed(lambda: (_kernels.argmax_scaled(P, E, buf.segment_stops, w, backend), sync()))
                                 for _ in range(reps))
    row["pass_vs_read"] = per_pass / (p_bytes / (machine["read"] * gb))  # target: <= 1.5
    row["backend"] = backend
    del P, buf
    gc.collect()

    if kept is not None and n * k <= 5e7 and n * k * 8 * 3 < 0.8 * available_memory_bytes():
        s64 = torch.cat(kept).cpu().numpy()
        del kept
        start = time.perf_counter()
        ref = reference_self_label(s64, lam, tol=1e-3, max_iter=20000)
        row["reference_seconds"] = time.perf_counter() - start
        row["reference_iterations"] = ref.iterations
        row["label_agreement"] = float((ref.labels == result.labels.cpu().numpy()).mean())
    return row


def bench_recorded(folder) -> list[dict]:
    """Every head of every recorded stage: passes of the default solver (L-BFGS then Newton), of L-BFGS alone
    and of plain Sinkhorn to tol 1e-3."""
    import torch

    from sela_edu.labelling import self_label

    rows = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as f:
            lam = float(f["lam"])
            heads = sorted((key for key in f.files if key.startswith("k") and key[1:].isdigit()), key=lambda s: int(s[1:]))
            for key in heads:
                scores = torch.from_numpy(f[key].astype(np.float32))
                out = {"name": f"{path.stem} {key}", "N": scores.shape[0], "K": scores.shape[1], "lam": lam}
                for method in ("auto", "lbfgs", "sinkhorn"):
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        r = self_label(scores, lam, method=method, max_iter=5000)
                    out[method] = (r.passes, r.converged, time.perf_counter() - t0)
                out["agreement"] = float((r.labels == self_label(scores, lam).labels).float().mean())  # plain vs default
                rows.append(out)
    return rows


def main(argv=None) -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000x128,50000x1000,250000x1000,1280000x3000")
    parser.add_argument("--kinds", default="recorded,normal,realistic")
    parser.add_argument("--lam", type=float, default=25.0)
    parser.add_argument("--storage", default="float32,bfloat16")
    parser.add_argument("--large-storage", default="bfloat16",
                        help="storage at sizes above 1e9 entries (float32 P at ImageNet scale is 15 GB)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to time the GPU path (bandwidth is then the CPU's)")
    args = parser.parse_args(argv)

    import torch

    from sela_edu.labelling import _kernels

    machine = measure_machine()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numba kernels: {_kernels.HAVE_NUMBA}; load average at start {load:.1f}")
    print(f"read bandwidth: BLAS matvec {machine['read_blas']:.1f} GB/s, sum {machine['read_sum']:.1f} GB/s -> "
          f"{machine['read']:.1f} GB/s; write {machine['write']:.1f} GB/s (first write of fresh memory "
          f"{machine['first_touch']:.1f} GB/s); forming P from cache {machine['exp_rate'] / 1e9:.2f} G entries/s")
    kinds = args.kinds.split(",")
    if "recorded" in kinds:
        folder = Path(__file__).resolve().parent / "scores"
        print(f"\nrecorded scores ({folder.name}/), tol 1e-3: passes of the default (L-BFGS then Newton) and of "
              "L-BFGS alone vs plain Sinkhorn iterations")
        print(f"{'scores':>30} {'N x K':>10} {'lam':>4} {'default':>7} {'s':>6} {'L-BFGS':>7} {'s':>6} "
              f"{'Sinkhorn':>8} {'s':>6} {'agree':>7}")
        for r in bench_recorded(folder):
            de, lb, sk = r["auto"], r["lbfgs"], r["sinkhorn"]
            print(f"{r['name']:>30} {r['N']:>5}x{r['K']:<4} {r['lam']:4.0f} {de[0]:7d} {de[2]:6.2f} {lb[0]:7d} "
                  f"{lb[2]:6.2f} {sk[0]:8d}{'' if sk[1] else '*'} {sk[2]:6.2f} {r['agreement']:7.4f}")
            sys.stdout.flush()
    header = (f"{'kind':>9} {'N x K':>13} {'storage':>8} {'mode':>8} {'passes':>6} {'err':>8} {'total s':>8} "
              f"{'form s':>7} {'floor s':>7} {'1st total':>9} {'1st form':>8} {'ms/pass':>8} {'pass/read':>9} {'argmax ms':>9} "
              f"{'old it':>6} {'old s':>6} {'ref it':>6} {'agree':>7}")
    print(f"\nlambda {args.lam:g}, tol 1e-3, default method (L-BFGS; then Newton up to 256 clusters)")
    print(header)
    for kind in (k for k in kinds if k != "recorded"):
        for size in args.sizes.split(","):
            n, k = (int(v) for v in size.lower().split("x"))
            storages = args.large_storage if n * k > 1e9 else args.storage
            for storage in storages.split(","):
                row = bench_size(kind, n, k, args.lam, machine, storage,
                                 reference=not args.no_reference and storage == "float32", device=args.device)
                if "skipped" in row:
                    print(f"{kind:>9} {size:>13} {storage:>8}  skipped: {row['skipped']}")
                    continue
                old = OLD.get((size, storage)) if kind == "normal" else None
                old_txt = f"{old[0]:6d} {old[1]:6.2f}" if old else f"{'-':>6} {'-':>6}"
                ref = (f"{row['reference_iterations']:6d} {row['label_agreement']:7.4f}" if "label_agreement" in row
                       else f"{'-':>6} {'-':>7}")
                print(f"{kind:>9} {size:>13} {storage:>8} {row['mode']:>8} {row['passes']:6d} {row['error']:8.1e} "
                      f"{row['seconds']:8.2f} {row['form_seconds']:7.2f} {row['form_floor']:7.2f} "
                      f"{row['first_seconds']:9.2f} {row['first_form_seconds']:8.2f} {row['ms_per_pass']:8.1f} {row['pass_vs_read']:9.2f} {row['ms_argmax']:9.1f} {old_txt} {ref}")
                sys.stdout.flush()
                gc.collect()
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
