"""What the loop measures on held-out data while it trains (``eval_every``): weighted-kNN accuracy.

The evaluation package's one protocol, :func:`~sela_edu.evaluation.evaluate`, reduced to the kNN, with
the config's ``knn_k`` neighbours: 200 by default (Wu et al. 2018), where the final evaluation and
the paper's tables use 10. The record names its k, so that the two numbers are never compared unlabelled."""

from __future__ import annotations

from sela_edu.models import unwrap
from sela_edu.training.run_loaders import plain_loader


def knn_during_training(model, data, eval_data, config, device) -> dict[str, float]:
    """Weighted kNN accuracy of the current features on ``eval_data`` (train split as memory bank), and
    the k it used: ``{"knn_accuracy": fraction, "knn_k": config.knn_k}``."""
    from sela_edu.evaluation import evaluate

    bs = config.score_batch_size or 2 * config.batch_size
    # Every rank evaluates on the whole of both sets (no shards): the numbers agree across ranks.
    result = evaluate(unwrap(model), plain_loader(config, data, bs, device=device, distributed=False),
                      plain_loader(config, eval_data, bs, device=device, distributed=False), knn_k=config.knn_k,
                      pca_dim=config.knn_pca, probe=False, heads=False, device=device)
    return {"knn_accuracy": result.knn["features"][config.knn_k], "knn_k": config.knn_k}


__all__ = ['knn_during_training']
