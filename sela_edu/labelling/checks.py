"""Checks of the label step's inputs, each refusing bad input with an error that names the problem."""

from __future__ import annotations

import math

import torch


def check_lam(lam) -> float:
    """``lam`` as a float, refused unless positive and finite."""
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a positive number, got {lam!r}") from None
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be a positive, finite number (it is the inverse entropy weight), got {lam}")
    return lam


def check_finite(scores: torch.Tensor) -> None:
    # a sum is one fast pass and is finite whenever every entry is (bar overflow, checked exactly)
    if not torch.isfinite(scores.sum()) and not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise ValueError(f"scores contain {bad} non-finite values (NaN or inf): check the network's outputs")


def check_prior(prior, num_clusters: int) -> torch.Tensor:
    if prior is None:
        return torch.full((num_clusters,), 1.0 / num_clusters, dtype=torch.float64)
    prior = torch.as_tensor(prior, dtype=torch.float64).cpu()
    if prior.ndim != 1 or prior.numel() != num_clusters:
        raise ValueError(f"prior must be a vector of {num_clusters} cluster proportions, got shape {tuple(prior.shape)}")
    if not torch.isfinite(prior).all():
        raise ValueError("prior contains non-finite values")
    if (prior < 0).any():
        raise ValueError(f"prior must not be negative, got minimum {float(prior.min())}")
    if abs(float(prior.sum()) - 1.0) > 1e-6:
        raise ValueError(f"prior must sum to 1, got {float(prior.sum()):.8g}")
    return prior


def check_init(init, num_clusters: int) -> torch.Tensor | None:
    if init is None:
        return None
    try:
        init = torch.as_tensor(init).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"init must be a float64 vector of {num_clusters} cluster potentials, got {type(init).__name__}") from None
    if init.ndim != 1 or init.numel() != num_clusters:
        raise ValueError(
            f"init must be a vector of {num_clusters} cluster potentials (a previous result's cluster_potential), "
            f"got shape {tuple(init.shape)}"
        )
    if torch.isnan(init).any() or (init == math.inf).any():
        raise ValueError("init contains NaN or +inf: pass a previous result's cluster_potential, or None")
    return init
