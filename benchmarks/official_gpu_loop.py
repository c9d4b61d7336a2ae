"""The official GPU label step beside the kit's, on the same scores (step 4 of the GPU check).

    python benchmarks/official_gpu_loop.py --device cuda --budget 40
    python benchmarks/official_gpu_loop.py --device cpu --n 20000 --k 300 --budget 5     # the dry run's size

:func:`official_self_label_torch` is a torch port of the official code's ``optimize_L_sk_multi``
(yukimasano/self-label), the algorithm :func:`sela_edu.labelling.reference.reference_self_label` keeps in
NumPy: P = softmax(scores) ** lambda in float64 (as the official main.py sets it), K x N, then alternate
``r = 1/K / (P c)`` and ``c = 1/N / (r P)``; every 10 iterations the error ``sum_i |c_i / c_new_i - 1|``
(a sum over all N images) is read back and the loop stops below 0.1; the labels are the argmax over clusters
of ``P * r``. Added here: a time budget (``--budget`` seconds of iterations, checked when the error is read,
so no extra host synchronisation); when it stops the loop, its error at that point is printed.

The kit solves the same scores (:func:`gpu_label_step.device_synthetic_scores`, 1.28M x 3000, lambda 25,
generated on the device) in float32 storage, and the share of equal labels is printed.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_label_step import device_synthetic_scores, problem_parser, timed_label_step, write_report  # noqa: E402

from sela_edu.training.runtime import sync  # noqa: E402


def official_self_label_torch(scores: torch.Tensor, lam: float, *, tol: float = 0.1, check_every: int = 10,
                              budget: float | None = None, dtype=torch.float64, block: int = 65536,
                              max_iter: int = 1_000_000) -> dict:
    """The official ``optimize_L_sk_multi`` on ``scores`` (N x K, any device): labels, iterations, error, and
    whether it converged (``error < tol``) or the time ``budget`` (seconds of iterations) stopped it."""
    device = scores.device
    n, k = scores.shape
    t0 = time.perf_counter()
    P = torch.empty(k, n, dtype=dtype, device=device)          # K x N, as in the published code
    for start in range(0, n, block):                            # softmax ** lam, computed as exp(lam * log_softmax)
        x = torch.log_softmax(scores[start:start + block].to(dtype), dim=1).mul_(lam).exp_()
        P[:, start:start + x.shape[0]] = x.T
        del x
    sync(device)
    form_seconds = time.perf_counter() - t0
    inv_k, inv_n = 1.0 / k, 1.0 / n
    r = torch.full((k,), inv_k, dtype=dtype, device=device)
    c = torch.full((n,), inv_n, dtype=dtype, device=device)
    err, it, stopped_by_budget = float("inf"), 0, False
    t0 = time.perf_counter()
    while it < max_iter:
        r = inv_k / (P @ c)
        c_new = inv_n / (r @ P)
        if it % check_every == 0:
            err = float(torch.nansum(torch.abs(c / c_new - 1)).item())   # the loop's one host synchronisation
        c = c_new
        it += 1
        if err < tol:
            break
        if it % check_every == 1 and budget is not None and time.perf_counter() - t0 > budget:
            stopped_by_budget = True
            break
    sync(device)
    loop_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    P.mul_(r[:, None])
    labels = P.argmax(dim=0)
    sync(device)
    argmax_seconds = time.perf_counter() - t1
    del P
    return {"labels": labels, "iterations": it, "error": err, "converged": err < tol,
            "stopped_by_budget": stopped_by_budget, "form_seconds": form_seconds, "loop_seconds": loop_seconds,
            "argmax_seconds": argmax_seconds, "seconds": form_seconds + loop_seconds + argmax_seconds,
            "ms_per_iteration": 1e3 * loop_seconds / max(it, 1)}


def run(args) -> dict:
    device = torch.device(args.device)
    scores = device_synthetic_scores(args.n, args.k, device=device, seed=args.seed, lam=args.lam)
    sync(device)
    seconds, buf, kit = timed_label_step(scores, args.lam, args.kit_storage)
    del buf
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        off = official_self_label_torch(scores, args.lam, tol=args.tol, budget=args.budget)
    equal = float((off["labels"] == kit.labels.to(off["labels"].device)).double().mean())
    report = {"n": args.n, "k": args.k, "lam": args.lam, "device": str(device), "budget": args.budget,
              "kit": {"storage": args.kit_storage, "seconds": seconds, "passes": int(kit.passes),
                      "error": float(kit.error), "converged": bool(kit.converged)},
              "official": {key: v for key, v in off.items() if key != "labels"}, "agreement": equal}
    if off["converged"]:
        status = f"converged (error {off['error']:.3g} < {args.tol:g})"
    else:
        status = (f"STOPPED BY THE {args.budget:g} s BUDGET at error {off['error']:.3g} (target {args.tol:g})"
                  if off["stopped_by_budget"] else f"stopped at max_iter, error {off['error']:.3g}")
    print(f"scores {args.n} x {args.k}, lambda {args.lam:g}, generated on {device}")
    print(f"  kit ({args.kit_storage} storage, tol 1e-3 on cluster masses): {seconds:.2f} s, {kit.passes} passes, "
          f"error {kit.error:.1e}")
    print(f"  official loop (float64, error every 10 iterations, stop at {args.tol:g}): {off['seconds']:.2f} s "
          f"(forming P {off['form_seconds']:.2f} s, {off['iterations']} iterations at {off['ms_per_iteration']:.2f} ms, "
          f"argmax {off['argmax_seconds']:.2f} s), {status}")
    ratio = off["seconds"] / seconds
    report["speedup"] = ratio
    print(f"  official seconds / kit seconds: {'' if off['converged'] else 'at least '}{ratio:.1f}"
          + ("" if off["converged"] else " (the official loop did not finish)"))
    print(f"  labels equal: {100 * equal:.3f} %" + ("" if off["converged"] else " (the official labels at its budget)"))
    return report


def main(argv=None) -> dict:
    parser = problem_parser(__doc__)
    parser.add_argument("--tol", type=float, default=0.1, help="the official stopping rule's threshold")
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of official iterations at most")
    parser.add_argument("--kit-storage", default="float32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    return write_report(run(args), args.json)


if __name__ == "__main__":
    main()
