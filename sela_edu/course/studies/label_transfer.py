"""Notebook 06's check of label transfer: how well a fresh network, trained on exported SeLa labels,
predicts the labels it was trained on."""

from __future__ import annotations

import torch

from sela_edu.evaluation import score_dataset


def label_fit(model: torch.nn.Module, data, labels: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """Per head, the percentage of images of ``data`` whose argmax score equals their label in
    ``labels`` (num_heads x N, indexed by position in ``data``), on the plain (unaugmented) images."""
    if labels.ndim != 2 or labels.shape[1] != len(data):
        raise ValueError(f"labels must be num_heads x {len(data)} (one row per head), got {tuple(labels.shape)}")
    heads = score_dataset(model, data, outputs="heads", batch_size=batch_size, device=device)["heads"]
    if len(heads) < labels.shape[0]:
        raise ValueError(f"the model has {len(heads)} heads, the labels {labels.shape[0]}")
    correct = torch.stack([(heads[h].argmax(1) == labels[h]).sum() for h in range(labels.shape[0])]).float()
    return 100.0 * correct / labels.shape[1]


__all__ = ["label_fit"]
