"""Checkers for the course's exercise cells.

Each ``check_*`` function takes the student's function, runs it on a few small problems chosen so
that the usual mistakes give visibly different answers, and either prints a short confirmation and
returns ``None`` or raises :class:`ExerciseFailure` (an ``AssertionError``, so nbgrader counts it as a
failed test) whose message says what came out and which mistake most likely produced it, e.g. *"your
columns sum to [...], not to b: after scaling the rows, scale the columns"*.

**No answer key ships here.** A right answer is recognised by its properties (marginals, sizes,
values planted in the test problem by construction) or by agreement with the kit's own public
functions that the course teaches with (:func:`sela_edu.ot.sinkhorn`,
:func:`sela_edu.evaluation.weighted_knn`, :mod:`sela_edu.evaluation.metrics`). The reference solutions live in the
instructor material (the solution edition of the notebooks, ``instructor/``), which students do not
install. Some exercises re-derive a kit function (``sinkhorn_step``: ``sinkhorn(-log Q, a, b, 1,
max_iter=1)``; ``size_spread``: :func:`~sela_edu.evaluation.metrics.cluster_size_spread`; ``matched_agreement``:
:func:`~sela_edu.evaluation.metrics.cluster_accuracy`; ``my_batch_codes``: :func:`~sela_edu.labelling.batch_codes`): their checkers call the student's function with that kit
function refused (:func:`without_kit`), so an answer that only calls it fails.

| exercise | notebook | student writes |
| --- | --- | --- |
| :func:`check_sinkhorn_step` | 01 | ``sinkhorn_step(Q, a, b) -> Q``: rescale rows to ``a``, then columns to ``b`` |
| :func:`check_equipartition` | 02 | ``marginal_errors(Q) -> (row_error, col_error)`` for SeLa's marginals 1/N and 1/K |
| :func:`check_labels_from_plan` | 02 | ``labels_from_plan(P, r, c) -> labels``: hard labels from the scaled plan |
| :func:`check_weighted_knn_vote` | 03 | ``weighted_knn_vote(sims, neighbour_labels, num_classes, temperature)`` |
| :func:`check_multihead_loss` | 04 | ``multihead_loss(scores, labels) -> loss``: cross-entropy averaged over the heads |
| :func:`check_size_spread` | 05 | ``size_spread(labels, k) -> (smallest, largest)`` cluster size relative to N/K |
| :func:`check_matched_agreement` | 06 | ``matched_agreement(labels_a, labels_b)``: agreement after matching ids one to one |
| :func:`check_column_max` | 07 | ``column_max(blocks)``: column maxima of a score matrix that arrives block by block |
| :func:`check_beats_verdict` | 08 | ``beats_verdict(a, b)``: "A beats B" over seeds: reproduces, does not, or within the spread |
| :func:`check_batch_codes` | 09 | ``my_batch_codes(scores, epsilon, iterations)``: SwAV's codes of one batch (exp(scores / epsilon), columns to B/K, rows to 1) |

The machinery every checker shares is in :mod:`~sela_edu.course.teaching.exercises.checking`; the checkers are
grouped by notebook: :mod:`~sela_edu.course.teaching.exercises.transport` (01, 02),
:mod:`~sela_edu.course.teaching.exercises.learning` (03, 04), :mod:`~sela_edu.course.teaching.exercises.clusters` (05 to 07),
:mod:`~sela_edu.course.teaching.exercises.reproduction` (08), :mod:`~sela_edu.course.teaching.exercises.online` (09).
Every name is importable from here (``from sela_edu.course.teaching import exercises``).
"""

from collections.abc import Callable

from sela_edu.course.teaching.exercises.checking import ExerciseFailure, without_kit
from sela_edu.course.teaching.exercises.clusters import check_column_max, check_matched_agreement, check_size_spread
from sela_edu.course.teaching.exercises.online import check_batch_codes
from sela_edu.course.teaching.exercises.learning import check_multihead_loss, check_weighted_knn_vote
from sela_edu.course.teaching.exercises.reproduction import check_beats_verdict
from sela_edu.course.teaching.exercises.transport import check_equipartition, check_labels_from_plan, check_sinkhorn_step

__all__ = [
    "ExerciseFailure",
    "check_sinkhorn_step",
    "check_equipartition",
    "check_labels_from_plan",
    "check_weighted_knn_vote",
    "check_multihead_loss",
    "check_size_spread",
    "check_matched_agreement",
    "check_column_max",
    "check_beats_verdict",
    "check_batch_codes",
    "without_kit",
    "EXERCISES",
]


#: exercise name -> (checker, notebook it appears in)
EXERCISES: dict[str, tuple[Callable, str]] = {
    "sinkhorn_step": (check_sinkhorn_step, "01_optimal_transport_toy"),
    "marginal_errors": (check_equipartition, "02_self_labelling_objective"),
    "labels_from_plan": (check_labels_from_plan, "02_self_labelling_objective"),
    "weighted_knn_vote": (check_weighted_knn_vote, "03_self_labelling_on_cpu"),
    "multihead_loss": (check_multihead_loss, "04_cifar_and_svhn"),
    "size_spread": (check_size_spread, "05_imbalance"),
    "matched_agreement": (check_matched_agreement, "06_label_transfer"),
    "column_max": (check_column_max, "07_imagenet_scale"),
    "beats_verdict": (check_beats_verdict, "08_what_reproduces"),
    "my_batch_codes": (check_batch_codes, "09_from_sela_to_swav"),
}
