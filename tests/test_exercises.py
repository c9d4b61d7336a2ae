"""The exercise checkers accept right answers (written here independently, in numpy and in torch) and
reject the usual wrong ones with a hint that names the mistake."""

import numpy as np
import pytest
import torch

from sela_edu import exercises
from sela_edu.exercises import ExerciseFailure


# ---------------------------------------------------------------- one Sinkhorn iteration

def step_right(q, a, b):
    q = q * (a / q.sum(1))[:, None]
    return q * (b / q.sum(0))[None, :]


def step_right_torch(q, a, b):
    q, a, b = (torch.as_tensor(x) for x in (q, a, b))
    q = q / q.sum(1, keepdim=True) * a[:, None]
    return q / q.sum(0, keepdim=True) * b[None, :]


def test_sinkhorn_step_accepts_right_answers(capsys):
    exercises.check_sinkhorn_step(step_right)
    assert "Correct" in capsys.readouterr().out
    exercises.check_sinkhorn_step(step_right_torch, quiet=True)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda q, a, b: q * (a / q.sum(1))[:, None], "columns sum to"),
        (lambda q, a, b: step_right(q.T, b, a).T, "columns first"),
        (lambda q, a, b: q, "unchanged"),
        (lambda q, a, b: q.sum(1), "shape"),
        (lambda q, a, b: step_right(q, np.ones_like(a), b), "columns sum to b"),
        (lambda q, a, b: q * np.nan, "NaN or inf"),
    ],
)
def test_sinkhorn_step_rejects_wrong_answers_with_a_hint(wrong, hint):
    with pytest.raises(ExerciseFailure, match=hint):
        exercises.check_sinkhorn_step(wrong, quiet=True)


def test_stub_gets_a_not_written_yet_hint():
    def stub(q, a, b):
        # YOUR CODE HERE
        raise NotImplementedError

    with pytest.raises(ExerciseFailure, match="YOUR CODE HERE"):
        exercises.check_sinkhorn_step(stub)


# ---------------------------------------------------------------- equipartition

def errors_right(q):
    n, k = q.shape
    return np.abs(q.sum(1) - 1 / n).max(), np.abs(q.sum(0) - 1 / k).max()


def test_equipartition_accepts_right_answers():
    exercises.check_equipartition(errors_right, quiet=True)
    exercises.check_equipartition(
        lambda q: tuple((torch.as_tensor(q).sum(d) - 1 / torch.as_tensor(q).shape[1 - d]).abs().max() for d in (1, 0)),
        quiet=True,
    )


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda q: errors_right(q)[::-1], "swapped"),
        (lambda q: (np.abs(q.sum(1) - 1 / q.shape[1]).max(), np.abs(q.sum(0) - 1 / q.shape[0]).max()), "1/K and columns with 1/N"),
        (lambda q: (np.abs(q.sum(1) - 1).max(), np.abs(q.sum(0) - 1).max()), "compared the sums with 1"),
        (lambda q: ((q.sum(1) - 1 / q.shape[0]).max(), (q.sum(0) - 1 / q.shape[1]).max()), "absolute value"),
        (lambda q: (np.abs(q.sum(1) - 1 / q.shape[0]).sum(), np.abs(q.sum(0) - 1 / q.shape[1]).sum()), "summed"),
        (lambda q: 0.0, "two numbers"),
    ],
)
def test_equipartition_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseFailure, match=hint):
        exercises.check_equipartition(wrong, quiet=True)


# ---------------------------------------------------------------- labels from the plan

def test_labels_from_plan():
    exercises.check_labels_from_plan(lambda p, r, c: (p * r[:, None] * c[None, :]).argmax(1), quiet=True)
    exercises.check_labels_from_plan(lambda p, r, c: torch.as_tensor(p * c).argmax(1), quiet=True)
    with pytest.raises(ExerciseFailure, match="raw scores"):
        exercises.check_labels_from_plan(lambda p, r, c: p.argmax(1), quiet=True)
    with pytest.raises(ExerciseFailure, match="argmax over its rows"):
        exercises.check_labels_from_plan(lambda p, r, c: p * r[:, None] * c, quiet=True)
    with pytest.raises(ExerciseFailure, match="divided"):
        exercises.check_labels_from_plan(lambda p, r, c: (p / r[:, None] / c).argmax(1), quiet=True)


# ---------------------------------------------------------------- weighted kNN vote

def vote_right(sims, labels, num_classes, temperature):
    one_hot = np.eye(num_classes)[labels]                       # n x k x C
    return (np.exp(sims / temperature)[..., None] * one_hot).sum(1).argmax(1)


def test_knn_vote_accepts_right_answers():
    exercises.check_weighted_knn_vote(vote_right, quiet=True)

    def torch_vote(sims, labels, c, t):
        votes = torch.zeros(len(sims), c, dtype=torch.float64)
        votes.scatter_add_(1, torch.as_tensor(labels), torch.as_tensor(sims / t).exp())
        return votes.argmax(1)

    exercises.check_weighted_knn_vote(torch_vote, quiet=True)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda s, l, c, t: np.array([np.bincount(r, minlength=c).argmax() for r in l]), "majority"),
        (lambda s, l, c, t: vote_right(np.log(np.clip(s, 1e-12, None)) * t, l, c, t), "similarity itself"),
        (lambda s, l, c, t: vote_right(s, l, c, 1.0), "without the temperature"),
        (lambda s, l, c, t: l[:, 0], "nearest neighbour"),
        (lambda s, l, c, t: np.exp(s / t), "shape"),
    ],
)
def test_knn_vote_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseFailure, match=hint):
        exercises.check_weighted_knn_vote(wrong, quiet=True)


def test_checker_refuses_a_non_function():
    with pytest.raises(ExerciseFailure, match="pass your function"):
        exercises.check_sinkhorn_step(np.eye(2))
