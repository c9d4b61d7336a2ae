"""The course's one data decision: which data set the CPU notebooks (02, 03, 05, 06) and ``sela-edu run`` use.

Fashion-MNIST is the course's data set: on it the lessons show what they teach. A machine without it
and without a network still runs every notebook, on scikit-learn's digits, and says so in a notice.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sela_edu.course.series.profiles import check_profile
from sela_edu.data import ensure_dataset, how_to_get
from sela_edu.data.datasets import canonical_name

#: The lessons whose point needs real images: on the digits they run, but show little.
FASHION_LESSONS = ("02 (the objective on real images), 03 (SeLa against k-means pseudo-labels and a random "
                   "network), 05 (imbalance) and 06 (label transfer)")


def fallback_notice(wanted: str = "fashion-mnist") -> str:
    """The notice printed when a run falls back to the digits."""
    wanted = {"fashion-mnist": "Fashion-MNIST"}.get(wanted, wanted)
    return (f"NOTICE: {wanted} is not in the data root and could not be downloaded, so this run uses "
            f"scikit-learn's digits (1797 images of 8 x 8 px). Lessons {FASHION_LESSONS} need {wanted} "
            f"to show what they teach; on the digits a random network is already a strong feature and the "
            f"differences between methods are a few test images. {how_to_get(wanted)}")


def cpu_dataset(profile: str, dataset: str | None = None, data_root: str | os.PathLike | None = None, *,
                paper: str | None = None, log: Callable[[str], None] | None = print) -> str:
    """The data set a CPU notebook (02, 03, 05, 06, 09) or ``sela-edu run`` uses, by the first rule that applies:

    1. ``dataset`` when given (its canonical name: ``"cifar-10"`` gives ``"cifar10"``);
    2. at the ``paper`` profile, ``paper`` when given (notebook 05 runs CIFAR-10 there; the notebook
       checks that its files are present, as nothing can stand in for them);
    3. the digits at the ``smoke`` profile (seconds, for tests);
    4. Fashion-MNIST from ``data_root`` (default: the data root of :mod:`sela_edu.settings`),
       downloaded there when it is missing (:func:`sela_edu.data.ensure_dataset`, not when
       ``$SELA_OFFLINE`` is set), and only when neither works the digits, with
       :func:`fallback_notice` printed through ``log``.

    Raises:
        ValueError: an unknown profile or data set name.
    """
    check_profile(profile)
    if dataset:
        return canonical_name(dataset)
    if profile == "paper" and paper:
        return canonical_name(paper)
    if profile == "smoke":
        return "digits"
    if ensure_dataset("fashion-mnist", data_root, log=log):
        return "fashion-mnist"
    if log:
        log(fallback_notice("fashion-mnist"))
    return "digits"


__all__ = ["FASHION_LESSONS", "fallback_notice", "cpu_dataset"]
