"""The label step at ImageNet scale on the device, from scores already there to labels (step 3 of the GPU check).

    python benchmarks/gpu_label_step.py --device cuda --bandwidth results/gpu_check/bandwidth.json
    python benchmarks/gpu_label_step.py --device cpu --n 20000 --k 300 --agree-rows 5000   # the dry run's size

Scores: 1.28M x 3000 (``--n``, ``--k``), lambda 25, shaped like a trained network's as
:func:`sela_edu.labelling.synthetic_scores` makes them (the same popularity, favourite, gap and noise), scaled
by 10 / lambda as ``benchmarks/bench_sinkhorn.py`` does, but GENERATED ON THE DEVICE by
:func:`device_synthetic_scores`, block by block into one float32 matrix (15.4 GB at full size): the CPU
generating them block by block was what made the last recorded check time out. Not timed.

Per storage (float32, bfloat16): seconds per head from the scores on the device to the labels (a ScoreBuffer
formed from them, ``self_label``, labels back; the buffer's memory is fresh on the first run and reused on the
second, as the trainer reuses its buffers: both printed, the second is the figure), passes over P, ms per pass
(one fused pass timed alone where the kernel module offers it, else the solve's time over its passes + 1)
beside one read of P at the device's measured bandwidth (``--bandwidth``: benchmarks/device_bandwidth.py's
JSON), and the share of labels equal to the CPU path's. The CPU path is too slow for 1.28M x 3000 inside the
check's limits, so the share is measured on a subsample: the first ``--agree-rows`` rows (128,000 by default,
the same K, so a tenth of the rows per cluster) solved as their own problem on the device in that storage and
on the CPU in float32 storage (the CPU path's most exact answer), label by label.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sela_edu.labelling import ScoreBuffer, self_label  # noqa: E402
from sela_edu.training.runtime import sync  # noqa: E402

# synthetic_scores is calibrated at lambda 10 (benchmarks/scores); at lambda 25 scores are scaled by 10 / 25
CALIBRATION_LAM = 10.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def device_synthetic_scores(n: int, k: int, *, device="cuda", seed: int = 0, lam: float = CALIBRATION_LAM,
                            gap=(4.0, 6.0), skew: float = 1.0, noise: float = 0.5, block: int = 131072,
                            out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`sela_edu.labelling.synthetic_scores`' distribution, generated on ``device`` block by block (float32,
    n x k), scaled by ``10 / lam``. The cluster popularity is the CPU function's for the same seed; the rows come
    from the device's own generator, so the numbers differ from the CPU function's, not their law."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(int(seed))
    popularity = torch.softmax(skew * torch.randn(k, generator=g, dtype=torch.float64), dim=0).to(dev, torch.float32)
    rows = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + 1)
    out = torch.empty(n, k, dtype=torch.float32, device=dev) if out is None else out
    lo, hi = gap
    scale = CALIBRATION_LAM / lam
    for start in range(0, n, block):
        m = min(block, n - start)
        chunk = out[start:start + m]
        chunk.normal_(0.0, noise, generator=rows)
        favourite = torch.multinomial(popularity, m, replacement=True, generator=rows)
        gaps = lo + (hi - lo) * torch.rand(m, device=dev, generator=rows)
        chunk[torch.arange(m, device=dev), favourite] += gaps
        chunk.mul_(scale)
    return out


def label_step(scores: torch.Tensor, lam: float, storage: str):
    """Scores on their device -> labels there: a ScoreBuffer in ``storage`` filled from them, self_label."""
    buf = ScoreBuffer(scores.shape[0], scores.shape[1], lam, storage_dtype=DTYPES[storage], device=scores.device,
                      keep_scores=False)
    buf.add(scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = self_label(buf)
    return buf, result


def timed_label_step(scores: torch.Tensor, lam: float, storage: str):
    sync(scores.device)
    t0 = time.perf_counter()
    buf, result = label_step(scores, lam, storage)
    result.labels.sum().item()          # the labels exist on the device
    sync(scores.device)
    return time.perf_counter() - t0, buf, result


def one_pass_seconds(buf: ScoreBuffer, device: torch.device) -> float | None:
    """One fused pass over the buffer's P timed alone, where the kernel module offers ``fused_pass`` as
    benchmarks/bench_sinkhorn.py calls it; None when its internals moved (the caller then falls back)."""
    try:
        from sela_edu.labelling import _kernels

        P = buf.storage
        try:   # the backend the solver itself picks for this P
            from sela_edu.labelling.solve import _pick_backend

            backend = _pick_backend(P, "auto")
        except Exception:  # noqa: BLE001
            backend = "torch" if P.device.type != "cpu" or not _kernels.numba_supports(P) else "numba"
        vec_device = torch.device("cpu") if backend == "numba" else P.device      # as the solver places them
        E = buf.segment_shift.to(vec_device, torch.float32).exp()
        w = torch.ones(P.shape[1], device=vec_device)
        _kernels.fused_pass(P, E, buf.segment_stops, w, backend)
        best = float("inf")
        for _ in range(3):
            sync(device)
            t0 = time.perf_counter()
            _kernels.fused_pass(P, E, buf.segment_stops, w, backend)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        print(f"  ({buf.storage.dtype} P: one pass timed alone on the {backend} backend)")
        return best
    except Exception as exc:  # noqa: BLE001 - a benchmark keeps going with the fallback figure
        print(f"  (one pass alone not timed: {type(exc).__name__}: {exc})")
        return None


def run(args) -> dict:
    device = torch.device(args.device)
    bandwidth = None
    if args.bandwidth and Path(args.bandwidth).is_file():
        bandwidth = json.loads(Path(args.bandwidth).read_text())["gbps"]
    t0 = time.perf_counter()
    scores = device_synthetic_scores(args.n, args.k, device=device, seed=args.seed, lam=args.lam)
    sync(device)
    gen_seconds = time.perf_counter() - t0
    print(f"scores {args.n} x {args.k} (float32, {scores.numel() * 4 / 1e9:.1f} GB) generated on {device} in "
          f"{gen_seconds:.2f} s; lambda {args.lam:g}; device bandwidth "
          + (f"{bandwidth:.1f} GB/s (copy)" if bandwidth else "not measured"))
    report = {"n": args.n, "k": args.k, "lam": args.lam, "device": str(device), "bandwidth_gbps": bandwidth,
              "generate_seconds": gen_seconds, "agree_rows": min(args.agree_rows, args.n), "storages": {}}
    m = report["agree_rows"]
    cpu_labels = None
    if m:
        sub_cpu = scores[:m].cpu()
        t0 = time.perf_counter()
        _, cpu_result = label_step(sub_cpu, args.lam, "float32")
        report["cpu_agree_seconds"] = time.perf_counter() - t0
        cpu_labels = cpu_result.labels.cpu()
        del sub_cpu
    print(f"{'storage':>9} {'s/head':>7} {'1st s':>7} {'passes':>6} {'err':>8} {'ms/pass':>8} {'read P ms':>9} "
          f"{'x floor':>7} {'equal to CPU':>12}")
    for storage in args.storages.split(","):
        first, buf, result = timed_label_step(scores, args.lam, storage)
        del buf
        seconds, buf, result = timed_label_step(scores, args.lam, storage)
        p_bytes = buf.storage.numel() * buf.storage.element_size()
        one = one_pass_seconds(buf, device)
        pass_source = "one fused pass alone"
        if one is None:
            one = seconds / (result.passes + 1)
            pass_source = "seconds / (passes + 1)"
        del buf
        read_ms = p_bytes / (bandwidth * 1e9) * 1e3 if bandwidth else None
        row = {"seconds": seconds, "first_seconds": first, "passes": int(result.passes), "error": float(result.error),
               "converged": bool(result.converged), "ms_per_pass": one * 1e3, "ms_per_pass_source": pass_source,
               "p_bytes": p_bytes, "read_p_ms": read_ms}
        if cpu_labels is not None:
            _, sub = label_step(scores[:m].contiguous(), args.lam, storage)
            row["agreement"] = float((sub.labels.cpu() == cpu_labels).double().mean())
        report["storages"][storage] = row
        ratio = f"{row['ms_per_pass'] / read_ms:7.1f}" if read_ms else f"{'-':>7}"
        agree = f"{100 * row['agreement']:11.3f}%" if "agreement" in row else f"{'-':>12}"
        print(f"{storage:>9} {seconds:7.2f} {first:7.2f} {row['passes']:6d} {row['error']:8.1e} {row['ms_per_pass']:8.2f} "
              f"{read_ms if read_ms else float('nan'):9.2f} {ratio} {agree}")
        sys.stdout.flush()
    if m:
        print(f"equal to CPU: the first {m} rows solved as their own problem on {device} in each storage and on the "
              f"CPU (float32 storage, {report['cpu_agree_seconds']:.1f} s); ms/pass: "
              + ", ".join(f"{s}: {r['ms_per_pass_source']}" for s, r in report["storages"].items()))
    return report


def problem_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the GPU check's label-step benchmarks: the device and the problem (N x K, lambda, seed)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=1_280_000)
    parser.add_argument("--k", type=int, default=3000)
    parser.add_argument("--lam", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def write_report(report: dict, path: str | None) -> dict:
    """``report`` written as JSON to ``path`` (when given), for the GPU check's closing table; returned."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2))
    return report


def main(argv=None) -> dict:
    parser = problem_parser(__doc__)
    parser.add_argument("--storages", default="float32,bfloat16")
    parser.add_argument("--agree-rows", type=int, default=128_000,
                        help="rows of the subsample solved on the CPU too (0: no comparison)")
    parser.add_argument("--bandwidth", default=None, help="device_bandwidth.py's JSON (the floor)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    return write_report(run(args), args.json)


if __name__ == "__main__":
    main()
