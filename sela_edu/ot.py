"""General entropic optimal transport: the plan between two histograms at a given cost, as in POT's
``ot.sinkhorn``. The teaching notebooks (01: warehouses and shops) use it beside POT's exact solver; the
label step of SeLa, the special case with uniform marginals on N x K scores, is :mod:`sela_edu.labelling`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["sinkhorn"]


def sinkhorn(cost, a, b, eps: float, *, max_iter: int = 1000, tol: float = 1e-9, return_log: bool = False):
    """Entropic optimal transport: the plan ``T`` minimising ``<T, cost> - eps * H(T)`` with marginals ``a``, ``b``.

    Works in the log domain (potentials ``f``, ``g``), so a small ``eps`` does not underflow:
    ``T_ij = exp((f_i + g_j - cost_ij) / eps)``. Stops when the row marginal's L1 error is below ``tol``
    (measured after the column update, which makes the columns exact). NumPy in, NumPy out; torch in,
    torch out.
    ``return_log=True`` also returns ``{"err": [...], "iterations": n}``.
    """
    is_numpy = not isinstance(cost, torch.Tensor)
    C = torch.as_tensor(np.asarray(cost) if is_numpy else cost, dtype=torch.float64)
    a = torch.as_tensor(np.asarray(a) if is_numpy else a, dtype=torch.float64, device=C.device)
    b = torch.as_tensor(np.asarray(b) if is_numpy else b, dtype=torch.float64, device=C.device)
    if C.ndim != 2 or a.shape != (C.shape[0],) or b.shape != (C.shape[1],):
        raise ValueError(f"cost must be n x m with a of length n and b of length m; got {tuple(C.shape)}, {tuple(a.shape)}, {tuple(b.shape)}")
    if not (torch.isfinite(C).all() and torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("cost, a and b must be finite")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("marginals a and b must not be negative")
    if not math.isclose(float(a.sum()), float(b.sum()), rel_tol=1e-9):
        raise ValueError(f"a and b must have the same total mass, got {float(a.sum())} and {float(b.sum())}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    errors = []
    for it in range(1, max_iter + 1):
        f = eps * (log_a - torch.logsumexp((g[None, :] - C) / eps, dim=1))
        g = eps * (log_b - torch.logsumexp((f[:, None] - C) / eps, dim=0))
        # after the g update columns are exact; measure the rows, which the next f update will fix
        plan_rows = torch.exp((f[:, None] + g[None, :] - C) / eps).sum(dim=1)
        errors.append(float((plan_rows - a).abs().sum()))
        if errors[-1] < tol:
            break
    plan = torch.exp((f[:, None] + g[None, :] - C) / eps)
    out = plan.numpy() if is_numpy else plan
    if return_log:
        return out, {"err": errors, "iterations": it}
    return out
