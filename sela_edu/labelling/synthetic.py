"""Benchmark data for the label step: scores shaped like a trained network's."""

from __future__ import annotations

import torch


def synthetic_scores(n: int, k: int, *, gap: tuple[float, float] = (4.0, 6.0), skew: float = 1.0,
                     noise: float = 0.5, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """Scores shaped like a trained network's: the hard case for the label step (float32, n x k).

    Each row prefers one cluster, drawn from a skewed popularity (log-normal with spread ``skew``, so some
    clusters are wanted by many more images than their share), by a logit gap drawn uniformly from ``gap``
    over Gaussian noise of scale ``noise``. Equipartition must then push many confident rows away from
    their favourite, which is what makes plain Sinkhorn-Knopp slow on real scores (hundreds to thousands
    of iterations) where standard-normal logits need tens. The defaults are calibrated on recorded scores
    of the kit's classroom network (``benchmarks/scores``, lambda 10): at 10,000 rows and K = 10, 50, 100
    plain Sinkhorn-Knopp needs about 490, 780 and 420 iterations to tol 1e-3 (the recorded heads: 560 to
    850), L-BFGS 23 to 46 passes (recorded: 15 to 46). At another lambda, multiply the scores by
    10 / lambda for the same problem in nats. Rows ``offset .. offset + n`` of one stream (same ``seed``)
    can be generated block by block.
    """
    g = torch.Generator().manual_seed(int(seed))
    popularity = torch.softmax(skew * torch.randn(k, generator=g, dtype=torch.float64), dim=0)
    rows = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * int(offset) + 1)
    scores = noise * torch.randn(n, k, generator=rows)
    favourite = torch.multinomial(popularity, n, replacement=True, generator=rows)
    lo, hi = gap
    scores[torch.arange(n), favourite] += lo + (hi - lo) * torch.rand(n, generator=rows)
    return scores
