"""Notebook 09's loop: from SeLa's label step on the whole data set to SwAV's codes per batch.

* :func:`successor_config`: a successor's classroom preset (``sela-v2``, ``deepcluster-v2``, ``swav``) on
  any data set, its small crops scaled to the images as the ledger's :func:`~sela_edu.course.ledger.runs.successor_settings` does;
* :func:`prototype_scores`: a cosine-head network's prototype cosines for every image (the scores SwAV's codes
  are computed from);
* :func:`iteration_sweep`: the codes of the set batch by batch after 1, 3, 10, ... iterations, beside the full
  label step, as cluster sizes and :func:`~sela_edu.labelling.code_balance`;
* :func:`queue_sweep`: the codes of a small batch scored beside a queue of earlier rows, at growing queue lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sela_edu.evaluation import score_dataset
from sela_edu.labelling import batch_codes, code_balance, self_label
from sela_edu.training import config_from_preset
from sela_edu.training.methods.swav import swapped_prediction_loss

SUCCESSORS = ("sela-v2", "deepcluster-v2", "swav")


def successor_config(method: str, dataset: str, **overrides):
    """``config_from_preset(f"{method}-classroom", dataset=dataset, ...)`` with the small crops scaled from
    Fashion-MNIST's 28 px to the data set's side (16 px of 28; at least 4 px), as the ledger runs them."""
    from sela_edu.course.ledger.runs import classroom_side
    from sela_edu.data.datasets import DATASET_INFO, canonical_name
    from sela_edu.training import PRESETS

    if method not in SUCCESSORS:
        raise ValueError(f"unknown successor {method!r}; choose one of {SUCCESSORS}")
    preset = PRESETS[f"{method}-classroom"]
    side = DATASET_INFO[canonical_name(dataset)]["image_size"]
    crop = max(4, round(side * preset["small_crop_size"] / classroom_side()))
    given = {k: v for k, v in overrides.items() if v is not None}
    return config_from_preset(f"{method}-classroom", dataset=dataset, **{"small_crop_size": crop, **given})


def prototype_scores(model, data, head: int = 0, device=None) -> torch.Tensor:
    """N x K cosines between each image's embedding and head ``head``'s prototypes (a cosine-head network:
    SeLa-v2, DeepCluster-v2, SwAV), in data order."""
    temperature = getattr(model, "head_temperature", None)
    if temperature is None:
        raise ValueError("the network has no cosine heads (head_temperature is None): train a successor "
                         "(sela-v2, deepcluster-v2, swav)")
    scored = score_dataset(model, data, device=device)
    return scored["heads"][head].float() * temperature


def _batches(n: int, batch: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


def iteration_sweep(scores: torch.Tensor, iterations: Sequence[int] = (1, 3, 10, 100), *, batch: int = 256,
                    epsilon: float = 0.05, lam: float = 10.0, seed: int = 0) -> dict[str, dict]:
    """Hard labels of every row of ``scores`` (N x K cosines), batch by batch (shuffled, ``batch`` rows each,
    the rest dropped) from SwAV's codes after each number of ``iterations``, and from the full label step on
    the whole set (``self_label(scores, lam)``, key ``"full set"``). Per setting: ``sizes`` (K cluster sizes
    over the set), ``balance`` (:func:`code_balance` of them) and ``batch_largest`` (the mean over batches of
    the largest cluster within one batch, as a multiple of B/K)."""
    scores = torch.as_tensor(scores).float()
    k = scores.shape[1]
    batches = _batches(scores.shape[0], min(batch, scores.shape[0]), seed)
    out = {}
    for its in iterations:
        labels, within = [], []
        for rows in batches:
            lab = batch_codes(scores[rows], epsilon, int(its)).argmax(dim=1)
            labels.append(lab)
            within.append(code_balance(lab, k)["largest"])
        lab = torch.cat(labels)
        out[f"{its} iteration{'s' if its != 1 else ''}"] = {
            "sizes": torch.bincount(lab, minlength=k), "balance": code_balance(lab, k),
            "batch_largest": sum(within) / len(within)}
    kept = torch.cat(batches)
    full = self_label(scores[kept], lam).labels.cpu()
    out["full set"] = {"sizes": torch.bincount(full, minlength=k), "balance": code_balance(full, k),
                       "batch_largest": float("nan")}
    return out


def queue_sweep(scores: torch.Tensor, queues: Sequence[int] = (0, 64, 256, 1024), *, batch: int = 32,
                epsilon: float = 0.05, iterations: int = 3, seed: int = 0) -> dict[int, dict]:
    """Codes of small batches (``batch`` rows) of ``scores``, each computed beside a queue of the ``q`` rows
    that came before it (SwAV's queue; q = 0: the batch alone), for every ``q`` of ``queues``. Per queue
    length: ``largest`` (mean over batches of the largest cluster within one batch as a multiple of B/K),
    ``empty`` (mean number of empty clusters within a batch), ``balance`` (:func:`code_balance` of all the
    batches' labels together)."""
    scores = torch.as_tensor(scores).float()
    n, k = scores.shape
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    start = max(queues)
    if start + batch > n:
        raise ValueError(f"{n} rows cannot give a queue of {start} and a batch of {batch}")
    out = {}
    for q in queues:
        labels, largest, empty = [], [], []
        for i in range(start, n - batch + 1, batch):
            rows = scores[order[i - q:i + batch]]
            lab = batch_codes(rows, epsilon, iterations)[-batch:].argmax(dim=1)
            labels.append(lab)
            balance = code_balance(lab, k)
            largest.append(balance["largest"])
            empty.append(balance["empty"])
        out[q] = {"largest": sum(largest) / len(largest), "empty": sum(empty) / len(empty),
                  "balance": code_balance(torch.cat(labels), k)}
    return out


__all__ = ["SUCCESSORS", "successor_config", "prototype_scores", "iteration_sweep", "queue_sweep",
           "batch_codes", "code_balance", "swapped_prediction_loss"]
