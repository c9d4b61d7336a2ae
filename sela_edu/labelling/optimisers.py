"""The optimisers of the semi-dual: Sinkhorn-Knopp, L-BFGS and Newton's method, and the best-point tracker.

Each takes a :class:`~sela_edu.labelling.semidual.SemiDual` and the starting potentials, appends the
cluster-mass error of every check to ``errors``, and returns ``(L, error, converged, steps)``. They stop
when the largest relative deviation of a cluster's mass from its target is below ``tol``: unlike the
published rule (a sum over all N images, whose float32 rounding noise alone grows with N) it does not
depend on N.
"""

from __future__ import annotations

import math

import torch

from sela_edu.labelling.semidual import MAX_SPREAD_NATS, SemiDual, marginal_error, too_sharp

# Curvature pairs kept by L-BFGS.
_LBFGS_MEMORY = 20
# Newton's method: steps longer than this (in nats of any cluster potential) are shortened
_NEWTON_STEP_NATS = 8.0
# "lbfgs+newton" hands over from L-BFGS to Newton's method once every cluster mass is within this of its
# target (close enough for Newton's quadratic model) ...
NEWTON_BELOW = 0.3
# ... and back to L-BFGS if this many Newton passes have not halved the error (a problem too sharp for it)
_NEWTON_PATIENCE = 6


class _Stop(Exception):
    """Raised inside the objective to end the optimiser: converged, or out of passes."""


def run_sinkhorn(sd: SemiDual, L: torch.Tensor, *, tol, max_iter, check_every, errors):
    """Plain Sinkhorn-Knopp: each pass rescales the columns to their targets (L += log(target / mass))."""
    error, converged, it = math.inf, False, 0
    for it in range(1, max_iter + 1):
        _, mass = sd(L)
        if it % check_every == 0 or it == max_iter:
            error = marginal_error(mass, sd.target)
            errors.append(error)
            if error <= tol:  # keep the L that was measured: rows exact, every cluster's mass within tol
                converged = True
                break
        # a cluster that receives no mass at all gets a huge scaling, which the next rebuild absorbs
        step = (sd.target / mass.clamp_min(1e-300)).log()
        L = torch.where(sd.active, L + step, L)
        sd.settle(L)
        if sd.buffer.log_scores is None and sd.spread(L) > MAX_SPREAD_NATS:
            too_sharp(sd, L, it)
    return L, error, converged, it


def run_lbfgs(sd: SemiDual, L0: torch.Tensor, *, tol, max_iter, errors, newton_below: float = 0.0):
    """Quasi-Newton (SciPy's L-BFGS-B) on the semi-dual, stopped by the cluster-mass rule.

    Every evaluation is one pass over P. Near a tight tolerance the float32 sums make F too noisy for a
    line search; when the optimiser stops on its own, it restarts from the best point (if it was still
    making progress) or goes on with Sinkhorn steps, which need no line search.
    """
    from scipy.optimize import minimize

    act = sd.active
    n_total = float(sd.target.sum())
    base = L0.clone()
    best, record = _best_tracker(sd, L0, errors)
    steps = [0]
    switch = [False]

    def full(x) -> torch.Tensor:
        L = base.clone()
        L[act] = torch.from_numpy(x).to(L.device)
        return L

    def fun(x):
        L = full(x)
        F, mass = sd(L)
        error = record(L, mass)
        if error <= tol or sd.passes >= max_iter:
            raise _Stop
        if error <= newton_below:
            switch[0] = True
            raise _Stop
        grad = ((mass - sd.target)[act] / n_total).cpu().numpy()
        return F / n_total, grad

    def count(intermediate_result):  # an accepted step: rebuild P around it if it has drifted far
        steps[0] += 1
        sd.settle(full(intermediate_result.x))

    x = L0[act].cpu().numpy()
    try:
        while True:
            start_error = best["error"]
            minimize(fun, x, jac=True, method="L-BFGS-B", callback=count,
                     options=dict(maxcor=_LBFGS_MEMORY, maxiter=max_iter + 1, maxfun=max_iter + 1,
                                  ftol=0.0, gtol=0.0, maxls=20))
            if not best["error"] < 0.5 * start_error:
                break  # no headway: the line search is defeated by rounding noise
            x = best["L"][act].cpu().numpy()
        steps[0] += _finish_with_sinkhorn(sd, best, record, tol=tol, max_iter=max_iter)
    except _Stop:
        pass
    if switch[0]:  # close enough for Newton's quadratic model: it usually finishes in a few passes
        L, error, converged, more = run_newton(sd, best["L"], tol=tol, max_iter=max_iter, errors=errors,
                                                patience=_NEWTON_PATIENCE)
        if converged or sd.passes >= max_iter:
            return L, error, converged, steps[0] + more
        # a problem so sharp that the quadratic model misleads: back to L-BFGS from the best point
        L, error, converged, more_lbfgs = run_lbfgs(sd, L, tol=tol, max_iter=max_iter, errors=errors)
        return L, error, converged, steps[0] + more + more_lbfgs
    return _best_point(sd, best, tol, steps[0])


def _best_tracker(sd: SemiDual, L0: torch.Tensor, errors: list):
    """``(best, record)``: the best point so far (a dict of error, L, mass) and ``record(L, mass)``, which
    appends a pass's cluster-mass error to ``errors``, keeps the point when it is the best, and returns it."""
    best = {"error": math.inf, "L": L0.clone(), "mass": None}

    def record(L, mass) -> float:
        error = marginal_error(mass, sd.target)
        errors.append(error)
        if error < best["error"]:
            best.update(error=error, L=L, mass=mass)
        return error

    return best, record


def _finish_with_sinkhorn(sd: SemiDual, best: dict, record, *, tol, max_iter) -> int:
    """Sinkhorn steps from the best point until converged or out of passes (they need no line search)."""
    L, mass, steps = best["L"], best["mass"], 0
    while True:
        L = torch.where(sd.active, L + (sd.target / mass.clamp_min(1e-300)).log(), L)
        steps += 1
        sd.settle(L)
        _, mass = sd(L)
        error = record(L, mass)
        if error <= tol or sd.passes >= max_iter:
            return steps


def _best_point(sd: SemiDual, best: dict, tol: float, steps: int):
    L, error = best["L"], best["error"]
    if sd.buffer.log_scores is None and sd.spread(L) > MAX_SPREAD_NATS:
        too_sharp(sd, L, sd.passes)
    return L, error, error <= tol, steps


def run_newton(sd: SemiDual, L: torch.Tensor, *, tol, max_iter, errors, patience: int | None = None):
    """Newton's method on the semi-dual, each pass giving F, its gradient and its K x K Hessian.

    The Hessian ``diag(mass) - sum_i q_i q_i^T`` is exact, so near the optimum the error falls
    quadratically. Far from it (a confident network: few images sit at a cluster's boundary, the
    quadratic model holds only close by) the step is damped, Levenberg-Marquardt style: the system
    ``H + damping * diag(mass)`` moves from Newton's step towards a short Sinkhorn-like step ``-g / mass``
    after every step that fails to lower F, and back after every success. Steps are also capped at
    ``_NEWTON_STEP_NATS``. F is flat along a common shift of all potentials; a tiny ridge makes the
    system solvable without changing the step elsewhere. With ``patience``, it gives up (unconverged) when
    that many passes have not halved the error it started from.
    """
    act = sd.active
    first_pass = sd.passes
    best, record = _best_tracker(sd, L, errors)
    steps, damping = 0, 0.0
    F, mass, H = sd.with_hessian(L)
    if record(L, mass) <= tol:
        return _best_point(sd, best, tol, steps)
    start_error = best["error"]
    while sd.passes < max_iter:
        if patience is not None and sd.passes - first_pass >= patience and best["error"] > 0.5 * start_error:
            break
        g = (mass - sd.target)[act]
        h = H[act][:, act] + torch.diag(damping * mass[act])
        ridge = 1e-9 * float(h.diagonal().abs().mean()) + 1e-300
        d = -torch.linalg.solve(h + ridge * torch.eye(len(g), dtype=h.dtype, device=h.device), g)
        if not float(g @ d) < 0:  # no descent direction left (rounding): Sinkhorn steps finish the job
            steps += _finish_with_sinkhorn(sd, best, record, tol=tol, max_iter=max_iter)
            return _best_point(sd, best, tol, steps)
        d *= min(1.0, _NEWTON_STEP_NATS / float(d.abs().max()))
        trial = L.clone()
        trial[act] += d
        F_new, mass_new, H_new = sd.with_hessian(trial)
        if record(trial, mass_new) <= tol:
            return _best_point(sd, best, tol, steps + 1)
        if F_new <= F + 1e-4 * float(g @ d):
            L, F, mass, H = trial, F_new, mass_new, H_new
            steps += 1
            damping = damping / 4 if damping > 1e-3 else 0.0
            sd.settle(L)
        elif damping > 1e12:  # F too noisy in float32 to see a decrease: Sinkhorn steps finish the job
            steps += _finish_with_sinkhorn(sd, best, record, tol=tol, max_iter=max_iter)
            return _best_point(sd, best, tol, steps)
        else:
            damping = max(4 * damping, 0.25)
    return _best_point(sd, best, tol, steps)
