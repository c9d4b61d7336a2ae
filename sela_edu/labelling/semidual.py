"""The label step as a smooth convex function of the K cluster potentials alone (the semi-dual).

The rows of the plan are exact after every row rescaling, so what the optimisers (:mod:`.optimisers`)
search is K numbers, each evaluation one pass over ``P`` (:mod:`._kernels`). This module holds that
function, its stopping measure (:func:`marginal_error`) and the rebuilds of ``P`` that keep very sharp
problems within float32's range.
"""

from __future__ import annotations

import torch

from sela_edu.labelling import _kernels
from sela_edu.labelling._kernels import LOG_FLOOR
from sela_edu.labelling.buffer import ScoreBuffer
from sela_edu.labelling.allreduce import all_reduce

# Rebuild P once the cluster scalings at an accepted step spread this far (in nats, largest minus smallest)
# since it was built: entries at the floor (e^-87 of their row's largest) then still weigh less than e^-47
# of the largest. Trial points of a line search rebuild only beyond MAX_SPREAD_NATS.
_ABSORB_NATS = 40.0
# Without the scores to rebuild from, the scalings may spread this far: beyond it, entries stored at the
# floor (e^-87) could weigh as much as real ones once scaled, and the answer would be the floor's.
MAX_SPREAD_NATS = 60.0


def marginal_error(mass: torch.Tensor, target: torch.Tensor) -> float:
    """Largest relative deviation of cluster masses from their targets (0 where both are 0)."""
    scale = torch.where(target > 0, target, torch.ones_like(target))
    return float(((mass - target).abs() / scale).max())


class SemiDual:
    """The label step as a function of the K cluster potentials L alone (the semi-dual).

    Rows of the plan are exact for any L (each row is rescaled to sum to 1), so what remains is

        F(L) = sum_i log sum_k exp(x_ik + L_k) - sum_k target_k L_k,

    convex, with gradient ``mass_k(L) - target_k``: the cluster masses of the row-normalised plan. One fused
    pass over P gives both. P holds ``exp(x_ik - column shift)`` in per-block frames (``E``) or, after a
    rebuild, with potentials ``A`` absorbed; ``M`` is the sum of the row shifts of the last rebuild, so F is
    the same function of L whatever the frame, and an optimiser may go on across a rebuild.
    """

    def __init__(self, buffer: ScoreBuffer, P: torch.Tensor, backend: str, vec_device, target, distributed: bool):
        self.buffer, self.P, self.backend, self.vec_device = buffer, P, backend, vec_device
        self.target, self.distributed = target, distributed
        self.active = target > 0  # clusters with a zero prior get no mass: their scaling is 0
        self.A = -buffer.column_shift.to(vec_device, torch.float64)
        self.E = buffer.segment_shift.to(vec_device, torch.float32).exp()
        self.stops = buffer.segment_stops
        self.M = 0.0
        self.passes = 0
        self.rebuilds = 0

    def spread(self, L: torch.Tensor) -> float:
        d = (L - self.A)[self.active]
        return float(d.max() - d.min())

    def settle(self, L: torch.Tensor, limit: float = _ABSORB_NATS) -> None:
        """Rebuild P around ``L`` when the scalings it needs have spread beyond ``limit`` (kept scores only)."""
        if self.buffer.log_scores is not None and self.spread(L) > limit:
            A = L - L[self.active].max()
            self.M = self.buffer.reform(torch.where(self.active, A, torch.full_like(A, LOG_FLOOR)))
            self.A = torch.where(self.active, A, A.new_zeros(()))
            self.E = self.buffer.segment_shift.to(self.vec_device, torch.float32).exp()
            self.stops = self.buffer.segment_stops
            self.rebuilds += 1

    def __call__(self, L: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``(F(L), mass(L))`` from one pass over P (rebuilding P first when L has drifted very far)."""
        return self._evaluate(L, hessian=False)[:2]

    def with_hessian(self, L: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(F(L), mass(L), Hessian(L))`` from one pass over P; the Hessian is K x K (float64)."""
        return self._evaluate(L, hessian=True)

    def _evaluate(self, L: torch.Tensor, hessian: bool):
        self.settle(L, MAX_SPREAD_NATS)
        d = L - self.A
        s = float(d[self.active].max())
        w = torch.where(self.active, (d - s).exp(), d.new_zeros(())).float()
        if hessian:
            mass, logsum, gram = _kernels.hessian_pass(self.P, self.E, self.stops, w)
        else:
            mass, logsum = _kernels.fused_pass(self.P, self.E, self.stops, w, self.backend)
        self.passes += 1
        shift = self.buffer.num_rows * s + self.M
        if isinstance(logsum, torch.Tensor):  # triton: still on the device, read with the masses below
            value = (logsum.to(self.vec_device, torch.float64) + shift).reshape(1)
        else:
            value = torch.tensor([logsum + shift], dtype=torch.float64, device=self.vec_device)
        parts = [mass.to(self.vec_device, torch.float64), value]
        if hessian:
            parts.append(gram.to(self.vec_device).flatten())
        packed = torch.cat(parts)
        if self.distributed:
            packed = all_reduce(packed.to(self.P.device), torch.distributed.ReduceOp.SUM).to(self.vec_device)
        if not torch.isfinite(packed).all():
            raise FloatingPointError(
                f"the label step broke down at pass {self.passes}: a cluster mass is not finite. The scores are "
                f"too sharp for lam={self.buffer.lam:g} or the prior has zeros some images cannot avoid: lower lam"
            )
        k = len(self.target)
        L_act = torch.where(self.active, L, L.new_zeros(()))
        F = float(packed[k]) - float((self.target * L_act).sum())
        mass = packed[:k]
        if not hessian:
            return F, mass, None
        # F's Hessian: diag(mass) - sum_i q_i q_i^T
        return F, mass, torch.diag(mass) - packed[k + 1:].view(k, k)

    def scalings(self, L: torch.Tensor) -> torch.Tensor:
        d = L - self.A
        s = float(d[self.active].max())
        return torch.where(self.active, (d - s).exp(), d.new_zeros(())).float()


def too_sharp(sd: SemiDual, L: torch.Tensor, where: int):
    """Refuse an answer that float32 entries at the floor would decide (no kept scores to rebuild from)."""
    raise FloatingPointError(
        f"the label step broke down at pass {where}: the cluster scalings spread over "
        f"{sd.spread(L):.0f} nats, so entries too small for float32 would decide the answer. The scores are "
        f"too sharp for lam={sd.buffer.lam:g}: lower lam, "
        "or fill the ScoreBuffer with keep_scores=True so the solver can rebuild P as it goes"
    )
