"""The paper's label transfer: a fresh network trained supervised on given pseudo-labels."""

from __future__ import annotations

import dataclasses

import torch

from sela_edu.training.config import TrainConfig
from sela_edu.training.loop import TrainResult, train


def transfer_labels(config: TrainConfig, data, labels, *, eval_data=None, callback=None,
                    progress: bool = True) -> TrainResult:
    """Train a fresh network supervised on given pseudo-labels (the paper's "label transfer").

    ``labels`` is num_heads x N (e.g. from :func:`sela_edu.training.labels_io.read_labels_csv`) or N. The network
    gets one head per label row with K = that row's largest label + 1; everything else comes from
    ``config`` (its method is set to "supervised").
    """
    labels = torch.as_tensor(labels).long()
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if labels.dim() != 2 or labels.numel() == 0:
        raise ValueError(f"labels must be num_heads x N, got shape {tuple(labels.shape)}")
    ks = [max(int(row.max()) + 1, 2) for row in labels]
    transfer = dataclasses.replace(config, method="supervised", num_heads=len(ks), num_clusters=ks)
    return train(transfer, data, eval_data=eval_data, callback=callback, progress=progress, labels=labels)


__all__ = ['transfer_labels']
