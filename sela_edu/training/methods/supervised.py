"""Training on fixed labels: the true classes (the supervised reference of the paper's tables), or labels
transferred from another run (:func:`~sela_edu.training.transfer_labels`). No label step."""

from __future__ import annotations

from sela_edu.training.methods.base import Method


class Supervised(Method):
    name = "supervised"
    label_step = False
