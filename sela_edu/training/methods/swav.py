"""SwAV (Caron et al., NeurIPS 2020): online codes and swapped prediction.

Every step, each of the two large crops gets codes from its own prototype scores by a few Sinkhorn-Knopp
iterations on the batch (:func:`~sela_edu.labelling.batch_codes`; scored beside a queue of recent
embeddings when the batch alone is too small to spread over K clusters), and every other view of the
image is trained to predict them: cross-entropy between the codes and the softmax of its scores over the
temperature. No pass over the data set: the labels the loop reports are the argmax of each image's
latest codes (of its first crop), which is what the equipartition of the batch codes is measured on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sela_edu.labelling import batch_codes
from sela_edu.models import unwrap
from sela_edu.training import torchrun as dist_utils
from sela_edu.training.methods.base import Method, forward_views

#: The views whose codes are targets: the two large crops (SwAV's ``--crops_for_assign 0 1``).
ASSIGNED_VIEWS = (0, 1)


def swapped_prediction_loss(logits: torch.Tensor, codes: dict[int, torch.Tensor], views: int) -> torch.Tensor:
    """SwAV's loss for one head: ``logits`` (V*N x K: the prototype cosines over the temperature, view after
    view), ``codes`` (view -> its N x K codes): for each coded view a, the mean over the other views v of
    ``-mean_i sum_k codes_a[i, k] log softmax(logits_v[i])_k``, then the mean over the coded views."""
    logp = F.log_softmax(logits.float(), dim=1).view(views, -1, logits.shape[1])
    total = 0.0
    for a, q in codes.items():
        others = [v for v in range(views) if v != a]
        total = total + sum(-(q * logp[v]).sum(dim=1).mean() for v in others) / len(others)
    return total / len(codes)


class SwAV(Method):
    name = "swav"
    label_step = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self.queue: torch.Tensor | None = None  # 2 x queue_length x d: the large crops' recent embeddings
        self.filled = 0                         # rows of the queue written so far
        self.coded: torch.Tensor | None = None  # which images this rank coded this epoch (under torchrun)

    def loss(self, s, loop, views, index):
        config, n = self.config, views[0].shape[0]
        outputs, embeddings = forward_views(s.net, views, embedding=True)
        model = unwrap(s.model)
        self.start_queue(loop.epoch, embeddings.shape[1], embeddings.device)
        use_queue = self.queue is not None and self.filled >= self.queue.shape[1]
        loss = 0.0
        for h, out in enumerate(outputs):
            cosines = out.float() * config.head_temperature
            codes = {}
            for a in ASSIGNED_VIEWS:
                with torch.no_grad():
                    batch = cosines[a * n:(a + 1) * n].detach()
                    if use_queue:
                        batch = torch.cat([self.queue[a] @ model.prototypes(h).detach().float().t(), batch])
                    codes[a] = batch_codes(batch, config.swav_epsilon, config.swav_iterations)[-n:]
            loss = loss + swapped_prediction_loss(out, codes, len(views))
            loop.labels[h, index] = codes[0].argmax(dim=1)
        if s.world > 1:
            if self.coded is None:
                self.coded = torch.zeros(loop.labels.shape[1], dtype=torch.bool, device=loop.labels.device)
            self.coded[index] = True
        self.push(embeddings[: len(ASSIGNED_VIEWS) * n].detach().float().view(len(ASSIGNED_VIEWS), n, -1))
        return loss / len(outputs), [out[:n] for out in outputs], torch.zeros((), device=s.device)

    def end_epoch(self, s, loop) -> None:
        """Under torchrun each rank coded its own images: every rank takes each image's latest label from
        the rank that coded it (the larger, for an image padded into two shards), so that the labels the
        loop reports and checkpoints are the whole run's."""
        if s.world == 1:
            return
        coded = self.coded if self.coded is not None else torch.zeros(loop.labels.shape[1], dtype=torch.bool,
                                                                      device=loop.labels.device)
        self.coded = None
        latest = dist_utils.all_reduce_max(torch.where(coded, loop.labels, -1))
        loop.labels = torch.where(latest >= 0, latest, loop.labels)

    def start_queue(self, epoch: int, dim: int, device) -> None:
        if self.queue is None and self.config.queue_length and epoch >= self.config.queue_start_epoch:
            self.queue = torch.zeros(len(ASSIGNED_VIEWS), self.config.queue_length, dim, device=device)
            self.filled = 0

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor) -> None:
        """The batch's embeddings (2 x N x d) in front of the queue; the oldest fall off its end."""
        if self.queue is None:
            return
        n = embeddings.shape[1]
        self.queue[:, n:] = self.queue[:, :-n].clone()
        self.queue[:, :n] = embeddings
        self.filled = min(self.filled + n, self.queue.shape[1])

    def state_dict(self) -> dict:
        return {"queue": None if self.queue is None else self.queue.cpu(), "filled": self.filled}

    def load_state_dict(self, state: dict, s) -> None:
        queue = state.get("queue")
        if queue is not None and queue.shape[:2] != (len(ASSIGNED_VIEWS), self.config.queue_length):
            raise ValueError(f"the checkpoint's queue is {tuple(queue.shape)}, this run's queue_length is "
                             f"{self.config.queue_length}")
        self.queue = None if queue is None else queue.to(s.device)
        self.filled = int(state.get("filled", 0))
