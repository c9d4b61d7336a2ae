"""SwAV's batch label step against the kit's solver on the same batch: time and balance.

    .venv/bin/python benchmarks/bench_batch_codes.py
    .venv/bin/python benchmarks/bench_batch_codes.py --sizes 256x100 4096x3000 --repeats 20

SwAV's codes ``exp(cosines / epsilon)`` scaled towards equal clusters are the transport plan of SeLa's
problem with ``lam = 1 / epsilon`` on the cosines (SeLa's ``P^lam`` is ``exp(lam * scores)`` up to each
row's scale), so both solve one problem: SwAV stops after three Sinkhorn-Knopp iterations
(:func:`sela_edu.labelling.batch_codes`), the kit's solver (:func:`sela_edu.labelling.self_label`) runs to
``tol`` 1e-3 on the cluster masses. Per batch size B x K: milliseconds per call (median of ``--repeats``),
and the hard labels' balance (largest and smallest cluster as multiples of B/K). The cosines are drawn as a
trained network's are: unit embeddings near a few prototypes, so that the argmax alone is unbalanced.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sela_edu.labelling import batch_codes, code_balance, self_label


def cosines(b: int, k: int, d: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(k, d, generator=g), dim=1)
    popular = prototypes[torch.randint(0, max(1, k // 10), (b,), generator=g)]  # a tenth of the clusters draw most rows
    z = F.normalize(popular + 0.8 * torch.randn(b, d, generator=g) / d ** 0.5, dim=1)
    return z @ prototypes.t()


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["256x10", "256x100", "256x3000", "4096x3000"])
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lam = 1 / args.epsilon
    print(f"epsilon {args.epsilon} (lambda {lam:g}), torch threads {torch.get_num_threads()}")
    print(f"{'B x K':>11} {'argmax':>15} {'3 iterations':>24} {'kit solver (tol 1e-3)':>32}")
    print(f"{'':>11} {'largest':>8} {'smallest':>6} {'ms':>8} {'largest':>8} {'smallest':>6} {'ms':>8} "
          f"{'passes':>7} {'largest':>8} {'smallest':>6}")
    for size in args.sizes:
        b, k = (int(v) for v in size.split("x"))
        scores = cosines(b, k)
        plain = code_balance(scores.argmax(1), k)
        codes_ms = median_ms(lambda: batch_codes(scores, args.epsilon, 3), args.repeats)
        codes = code_balance(batch_codes(scores, args.epsilon, 3).argmax(1), k)
        line = (f"{size:>11} {plain['largest']:>8.2f} {plain['smallest']:>6.2f} {codes_ms:>8.2f} "
                f"{codes['largest']:>8.2f} {codes['smallest']:>6.2f}")
        if b < k:  # equal clusters need at least one row each: SwAV adds its queue's rows for this
            print(f"{line} {'n/a: fewer rows than clusters (SwAV adds a queue)':>32}")
            continue
        solve_ms = median_ms(lambda: self_label(scores, lam), args.repeats)
        result = self_label(scores, lam)
        solved = code_balance(result.labels, k)
        print(f"{line} {solve_ms:>8.2f} {result.passes:>7} {solved['largest']:>8.2f} {solved['smallest']:>6.2f}")


if __name__ == "__main__":
    main()
