"""What every method of the trainer is (:class:`Method`), and the two pieces most of them share: the
forward pass of a step's views (:func:`forward_views`) and the cross-entropy on labels (:func:`labels_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sela_edu.models import unwrap


class Method:
    """One training method: its step's loss, its labels, and the state it keeps between steps.

    ``label_step``: whether labels come from label optimisations on the loop's schedule (then
    :meth:`new_labels` makes them); SwAV's come from every batch instead.
    """

    name = ""
    label_step = True

    def __init__(self, config) -> None:
        self.config = config

    def new_labels(self, s, loop, previous: torch.Tensor, part: dict) -> tuple[torch.Tensor, list[dict]]:
        """One label optimisation: the new labels (heads x N, on the CPU) and one health row per solved
        head; ``part`` collects score_seconds and solve_seconds."""
        raise NotImplementedError(f"{self.name} has no label step")

    def loss(self, s, loop, views: list[torch.Tensor], index: torch.Tensor):
        """The step's loss on the views of a batch (one tensor per crop, N images each), under autocast.
        Returns (loss, the heads' outputs for the first view, the rotation head's correct guesses)."""
        return labels_loss(s, loop.labels, views, index)

    def before_update(self, s, loop) -> None:
        """Between backward and the optimiser's step: the prototypes stay frozen for their first steps."""
        if loop.step < self.config.freeze_prototypes_steps:
            for head in unwrap(s.model).heads:
                for p in head.parameters():
                    p.grad = None

    def end_epoch(self, s, loop) -> None:
        """After an epoch's last step, on every rank: nothing where labels come from label steps, which
        every rank makes whole."""

    def state_dict(self) -> dict:
        """What the method keeps between steps, for the checkpoint (CPU tensors)."""
        return {}

    def load_state_dict(self, state: dict, s) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state, but the checkpoint holds {sorted(state)}")


def forward_views(net, views: list[torch.Tensor], embedding: bool = False):
    """Every head's outputs for all views, view after view (V*N x K each): views of one size go through
    the network together (one BatchNorm batch, as SwAV). With ``embedding``: also the V*N x d embeddings."""
    groups, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        groups.append(views[start] if end - start == 1 else torch.cat(views[start:end]))
        start = end
    results = [net(x, embedding=True) if embedding else net(x) for x in groups]
    heads = [r[0] for r in results] if embedding else results
    outputs = [torch.cat([group[h] for group in heads]) if len(heads) > 1 else heads[0][h]
               for h in range(len(heads[0]))]
    if embedding:
        return outputs, torch.cat([r[1] for r in results]) if len(results) > 1 else results[0][1]
    return outputs


def labels_loss(s, labels: torch.Tensor, views: list[torch.Tensor], index: torch.Tensor, outputs=None):
    """Cross-entropy against each image's labels, averaged over heads (every view of an image trained on its
    label, as DeepCluster-v2), plus the rotation loss for SeLa + Rot. ``outputs``: the views' head outputs,
    when the caller already has them."""
    n = views[0].shape[0]
    zero = torch.zeros((), device=s.device)
    if s.config.rotation:  # the four rotations of every image; labels apply to the upright ones
        x = views[0]
        outputs = s.net(torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(4)]), rotation=True)
        turns = torch.arange(4, device=s.device).repeat_interleave(n)
        rotation_logits, outputs = outputs[-1].float(), [out[:n] for out in outputs[:-1]]
        loss = torch.stack([F.cross_entropy(out.float(), labels[h, index]) for h, out in enumerate(outputs)]).mean()
        loss = loss + F.cross_entropy(rotation_logits, turns)
        return loss, outputs, (rotation_logits.argmax(1) == turns).sum()
    if len(views) == 1:
        outputs = s.net(views[0]) if outputs is None else outputs
        loss = torch.stack([F.cross_entropy(out.float(), labels[h, index]) for h, out in enumerate(outputs)]).mean()
        return loss, outputs, zero
    outputs = forward_views(s.net, views) if outputs is None else outputs
    loss = torch.stack([F.cross_entropy(out.float(), labels[h, index].repeat(len(views)))
                        for h, out in enumerate(outputs)]).mean()
    return loss, [out[:n] for out in outputs], zero
