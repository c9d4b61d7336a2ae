"""Notebook 05's study: SeLa, k-means pseudo-labels and supervised training on a full, a lightly and a
heavily imbalanced training set, each network scored by the same frozen evaluation.

Functions take data and configurations and return results; the notebook prints, plots and draws the
verdicts.
"""

from __future__ import annotations

import dataclasses

import torch

from sela_edu.course.series.profiles import checkpoint_folder
from sela_edu.data import heavy_imbalance, light_imbalance
from sela_edu.evaluation import evaluate
from sela_edu.training import train

#: the imbalance settings of the paper's Table 3, in the order the notebook draws them
SETTINGS = ("full", "light", "heavy")
#: heavy imbalance removes 10 %, 20 %, ... of the classes, capped so that the last class keeps 10 %
HEAVY_MAX_FRACTION = 0.9


def imbalance_subsets(targets: torch.Tensor, settings=SETTINGS, seed: int = 0) -> dict[str, torch.Tensor]:
    """Positions of the training images each setting keeps: ``full`` (all), ``light`` (half of the last
    class removed), ``heavy`` (10 % of class 0 removed, 20 % of class 1, ...)."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown imbalance setting(s) {unknown}; choose from {list(SETTINGS)}")
    build = {"full": lambda: torch.arange(len(targets)),
             "light": lambda: light_imbalance(targets, seed=seed),
             "heavy": lambda: heavy_imbalance(targets, seed=seed, max_fraction=HEAVY_MAX_FRACTION)}
    return {s: build[s]() for s in SETTINGS if s in settings}


def method_config(base, method: str, num_classes: int):
    """``base`` with ``method``; supervised training gets one head of as many clusters as classes."""
    cfg = dataclasses.replace(base, method=method)
    if method == "supervised":
        cfg = dataclasses.replace(cfg, num_heads=1, num_clusters=num_classes)
    return cfg


def imbalance_study(data, subsets: dict[str, torch.Tensor], base, methods, *, evaluation_split, test,
                    knn_k: int, output_dir) -> dict[str, dict[str, dict]]:
    """Train each method on each subset of ``data`` and score it with the kit's ``evaluate`` on the same
    balanced ``evaluation_split`` and ``test``: ``table[setting][method] = {"knn": %, "linear": %}``.

    Each run checkpoints under ``output_dir`` (tagged by setting), so a re-run resumes instead of
    recomputing.
    """
    if not subsets or not methods:
        raise ValueError("give at least one imbalance setting and one method")
    table = {}
    for setting, idx in subsets.items():
        part = data.subset(idx)
        for method in methods:
            cfg = method_config(base, method, len(data.classes))
            cfg.checkpoint_dir = str(checkpoint_folder(cfg, output_dir, tag=f"05{setting}"))
            run = train(cfg, part, progress=False)
            measured = evaluate(run.model, evaluation_split, test, knn_k=knn_k, heads=False)
            table.setdefault(setting, {})[method] = measured.accuracies()
    return table


def accuracy_drops(table: dict, metric: str = "linear", start: str = "full", end: str = "heavy") -> dict[str, float]:
    """Per method, how many points of ``metric`` it loses from the ``start`` setting to the ``end`` one
    (methods run in both; empty when either setting is missing)."""
    if start not in table or end not in table:
        return {}
    return {m: table[start][m][metric] - table[end][m][metric] for m in table[start] if m in table[end]}


__all__ = ["SETTINGS", "imbalance_subsets", "method_config", "imbalance_study", "accuracy_drops"]
