"""What the loop measures on held-out data while it trains (``eval_every``): weighted-kNN accuracy.

Kept apart from the loop so that it can move onto the evaluation package's one protocol."""

from __future__ import annotations

from sela_edu.training.loaders import plain_loader
from sela_edu.training.runtime import unwrap


def knn_during_training(model, data, eval_data, config, device) -> dict[str, float]:
    """Weighted kNN accuracy of the current features on ``eval_data`` (train split as memory bank)."""
    from sela_edu.evaluation import protocol as evaluation

    net = unwrap(model)
    bs = config.score_batch_size or 2 * config.batch_size
    # Every rank evaluates on the whole of both sets (no shards): the numbers agree across ranks.
    train_feats = evaluation.extract_features(net, plain_loader(config, data, bs, device=device, distributed=False))
    test_feats = evaluation.extract_features(net, plain_loader(config, eval_data, bs, device=device, distributed=False))
    if config.knn_pca is not None:
        train_feats, test_feats = evaluation.pca_project(train_feats, test_feats, dim=config.knn_pca)
    acc = evaluation.knn_accuracy(train_feats, data.targets, test_feats, eval_data.targets, k=config.knn_k)
    return {"knn_accuracy": float(acc)}


__all__ = ['knn_during_training']
