"""The exercise checkers accept right answers (written here independently, in numpy and in torch) and
reject the usual wrong ones with a hint that names the mistake."""

import numpy as np
import pytest
import torch

from sela_edu.course.teaching import exercises
from sela_edu.course.teaching.exercises import ExerciseFailure


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
    with pytest.raises(ExerciseFailure, match="multiply \\(not divide\\)"):
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
        (lambda s, l, c, t: np.exp(s / t), "vote totals"),
        (lambda s, l, c, t: vote_right(s * t * t, l, c, t), "majority"),   # exp(s * T): weights too flat
    ],
)
def test_knn_vote_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseFailure, match=hint):
        exercises.check_weighted_knn_vote(wrong, quiet=True)


def test_checker_refuses_a_non_function():
    with pytest.raises(ExerciseFailure, match="pass your function"):
        exercises.check_sinkhorn_step(np.eye(2))


# ---------------------------------------------------------------- 04: the multi-head loss

import torch.nn.functional as F  # noqa: E402


def loss_right(scores, labels):
    return torch.stack([F.cross_entropy(s, y) for s, y in zip(scores, labels)]).mean()


def test_multihead_loss_accepts_right_answers():
    exercises.check_multihead_loss(loss_right, quiet=True)
    exercises.check_multihead_loss(
        lambda scores, labels: sum(-torch.log_softmax(s, 1).gather(1, y[:, None]).mean() for s, y in zip(scores, labels))
        / len(scores), quiet=True)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda s, y: sum(F.cross_entropy(a, b) for a, b in zip(s, y)), "summed"),
        (lambda s, y: F.cross_entropy(s[0], y[0]), "only head 0"),
        (lambda s, y: torch.stack([F.cross_entropy(a, y[0]) for a in s]).mean(), "head 0's labels"),
        (lambda s, y: torch.stack([F.nll_loss(a, b) for a, b in zip(s, y)]).mean(), "log_softmax"),
        (lambda s, y: torch.stack([F.cross_entropy(a.softmax(1), b) for a, b in zip(s, y)]).mean(), "softmax yourself"),
        (lambda s, y: loss_right(s, y).item(), "tensor"),
        (lambda s, y: loss_right(s, y).detach(), "backpropagate"),
        (lambda s, y: torch.stack([F.cross_entropy(a, b, reduction="none") for a, b in zip(s, y)]), "one number"),
    ],
)
def test_multihead_loss_rejects_wrong_answers(wrong, hint):
    with pytest.raises(ExerciseFailure, match=hint):
        exercises.check_multihead_loss(wrong, quiet=True)


# ---------------------------------------------------------------- 05: cluster sizes

def spread_right(labels, k):
    sizes = np.bincount(labels, minlength=k) / (len(labels) / k)
    return sizes.min(), sizes.max()


def test_size_spread():
    exercises.check_size_spread(spread_right, quiet=True)
    exercises.check_size_spread(lambda y, k: tuple(torch.bincount(torch.as_tensor(y), minlength=k).float()
                                                   .mul(k / len(y)).aminmax()), quiet=True)
    for wrong, hint in [
        (lambda y, k: spread_right(y, k)[::-1], "swapped"),
        (lambda y, k: (np.bincount(y, minlength=k).min(), np.bincount(y, minlength=k).max()), "raw counts"),
        (lambda y, k: tuple(v / k for v in spread_right(y, k)), "divided by N"),
        (lambda y, k: spread_right(np.unique(y, return_inverse=True)[1], len(np.unique(y))), "empty"),
        (lambda y, k: 1.0, "two numbers"),
    ]:
        with pytest.raises(ExerciseFailure, match=hint):
            exercises.check_size_spread(wrong, quiet=True)


# ---------------------------------------------------------------- 06: matched agreement

def agreement_right(a, b):
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(counts, (a, b), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return counts[rows, cols].sum() / len(a)


def majority_match(a, b):
    counts = np.zeros((b.max() + 1, a.max() + 1))
    np.add.at(counts, (b, a), 1)
    return counts.max(1).sum() / len(a)


def test_matched_agreement():
    exercises.check_matched_agreement(agreement_right, quiet=True)
    for wrong, hint in [
        (lambda a, b: np.mean(a == b), "compared the ids directly"),
        (majority_match, "majority class"),
        (lambda a, b: 100 * agreement_right(a, b), "percentage"),
        (lambda a, b: 1 - agreement_right(a, b), "disagreement"),
    ]:
        with pytest.raises(ExerciseFailure, match=hint):
            exercises.check_matched_agreement(wrong, quiet=True)


# ---------------------------------------------------------------- 07: streaming column maxima

def colmax_right(blocks):
    running = None
    for block in blocks:
        m = block.amax(0)
        running = m if running is None else torch.maximum(running, m)
    return running


def colmax_from_zero(blocks):
    running = None
    for block in blocks:
        running = torch.zeros(block.shape[1]) if running is None else running
        running = torch.maximum(running, block.amax(0))
    return running


def colmax_last(blocks):
    for block in blocks:
        m = block.amax(0)
    return m


def test_column_max():
    exercises.check_column_max(colmax_right, quiet=True)
    exercises.check_column_max(lambda blocks: np.max(np.concatenate([b.numpy() for b in blocks]), axis=0), quiet=True)
    for wrong, hint in [
        (colmax_from_zero, "started the running maximum at 0"),
        (colmax_last, "only the last block"),
        (lambda blocks: torch.cat(list(blocks)).amax(1), "one value per row"),
    ]:
        with pytest.raises(ExerciseFailure, match=hint):
            exercises.check_column_max(wrong, quiet=True)


# ---------------------------------------------------------------- 08: the ledger's verdict rule

def verdict_right(a, b):
    import statistics

    spread = sum(statistics.stdev(x) if len(x) > 1 else 0.0 for x in (a, b))
    margin = statistics.fmean(a) - statistics.fmean(b)
    return "reproduces" if margin > spread else "does not reproduce" if margin < -spread else "within the spread"


def verdict_with(*, ddof=1, spread_of=sum, flip=False):
    """A verdict rule with one foreseeable mistake."""
    def verdict(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = spread_of([x.std(ddof=ddof) for x in (a, b)])
        margin = (b.mean() - a.mean()) if flip else (a.mean() - b.mean())
        return "reproduces" if margin > spread else "does not reproduce" if margin < -spread else "within the spread"
    return verdict


def test_beats_verdict():
    exercises.check_beats_verdict(verdict_right, quiet=True)
    with pytest.warns(RuntimeWarning):       # numpy's nan std of a single seed: the one-seed hint
        with pytest.raises(ExerciseFailure, match="one value is nan"):
            exercises.check_beats_verdict(verdict_with(), quiet=True)
    for wrong, hint in [
        (verdict_with(ddof=0), "not the population one"),
        (verdict_with(spread_of=max), "not the larger one"),
        (verdict_with(flip=True), "other way round"),
        (verdict_with(spread_of=lambda spreads: 0.0), "larger than the spread"),
        (lambda a, b: "yes", "return one of"),
    ]:
        with pytest.raises(ExerciseFailure, match=hint):
            exercises.check_beats_verdict(wrong, quiet=True)


# ---------------------------------------------------------------- 09: SwAV's batch Sinkhorn

def codes_right(scores, epsilon, iterations):
    q = torch.exp((scores - scores.max()) / epsilon)
    b, k = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True) * (b / k)
        q = q / q.sum(dim=1, keepdim=True)
    return q


def codes_right_numpy(scores, epsilon, iterations):
    q = np.exp((np.asarray(scores, dtype=np.float64) - float(scores.max())) / epsilon)
    b, k = q.shape
    for _ in range(iterations):
        q *= (b / k) / q.sum(axis=0)
        q /= q.sum(axis=1, keepdims=True)
    return q


def codes_rows_first(scores, epsilon, iterations):
    q = torch.exp((scores - scores.max()) / epsilon)
    b, k = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True)
        q = q / q.sum(dim=0, keepdim=True) * (b / k)
    return q


def codes_columns_only(scores, epsilon, iterations):
    q = torch.exp((scores - scores.max()) / epsilon)
    b, k = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True) * (b / k)
    return q


def test_batch_codes_accepts_right_answers(capsys):
    exercises.check_batch_codes(codes_right)
    assert "Correct" in capsys.readouterr().out
    exercises.check_batch_codes(codes_right_numpy, quiet=True)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (codes_rows_first, "rows sum to .* each iteration scales the columns first and the rows last"),
        (codes_columns_only, "rows sum to"),
        (lambda s, e, i: codes_right(s, 1.0, i), "without epsilon"),
        (lambda s, e, i: codes_right(s, 1.0 / e, i), r"exp\(scores \* epsilon\)"),
        (lambda s, e, i: codes_right(s, e, i - 1), "one iteration too few"),
        (lambda s, e, i: codes_right(s, e, i + 1), "one iteration too many"),
        (lambda s, e, i: torch.softmax(s / e, dim=1), "softmax"),
        (lambda s, e, i: codes_right(s, e, i).T, "transposed"),
        (lambda s, e, i: codes_right(s, e, i) * float("nan"), "NaN or inf"),
        (lambda s, e, i: codes_right(s, e, i) * 0.5 + 0.5 / s.shape[1], "differ from SwAV's"),
    ],
)
def test_batch_codes_rejects_wrong_answers_with_a_hint(wrong, hint):
    with pytest.raises(ExerciseFailure, match=hint):
        exercises.check_batch_codes(wrong, quiet=True)


# ---------------------------------------------------------------- every exercise

@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_every_checker_turns_a_stub_into_the_not_written_hint(name):
    checker, _ = exercises.EXERCISES[name]

    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    with pytest.raises(ExerciseFailure, match="not written yet.*YOUR CODE HERE"):
        checker(stub, quiet=True)


def test_the_package_ships_no_reference_answers():
    """No private reference implementation of an exercise in the modules students import."""
    import importlib
    import pkgutil

    modules = [exercises] + [importlib.import_module(f"{exercises.__name__}.{m.name}")
                             for m in pkgutil.iter_modules(exercises.__path__)]
    assert len(modules) > 2                                  # the package and its checker modules
    names = [f"{m.__name__}.{n}" for m in modules for n in dir(m) if n.startswith("_reference")]
    assert names == []


# ---------------------------------------------------------------- answers that only call the kit

def kit_sinkhorn_step(Q, a, b):
    from sela_edu.ot import sinkhorn

    return sinkhorn(-np.log(Q), a, b, 1.0, max_iter=1)


def kit_size_spread(labels, k):
    from sela_edu.evaluation import metrics

    spread = metrics.cluster_size_spread(labels, k)
    return spread["min"], spread["max"]


def kit_matched_agreement(a, b):
    from sela_edu.evaluation.metrics import cluster_accuracy

    return cluster_accuracy(a, b)


def kit_beats_verdict(a, b):
    from sela_edu.course.ledger.claims import Beats

    return Beats("a", "b", "knn").judge({"a": a, "b": b}).verdict


def kit_my_batch_codes(scores, epsilon, iterations):
    from sela_edu.labelling import batch_codes

    return batch_codes(scores, epsilon, iterations)


KIT_ANSWERS = {"sinkhorn_step": kit_sinkhorn_step, "size_spread": kit_size_spread,
               "matched_agreement": kit_matched_agreement, "beats_verdict": kit_beats_verdict,
               "my_batch_codes": kit_my_batch_codes}


@pytest.mark.parametrize("name", sorted(KIT_ANSWERS))
def test_an_answer_that_only_calls_the_kit_fails(name):
    checker, _ = exercises.EXERCISES[name]
    with pytest.raises(ExerciseFailure, match=f"{name} calls the kit's sela_edu"):
        checker(KIT_ANSWERS[name], quiet=True)


def test_without_kit_replaces_every_binding_and_restores_them():
    from sela_edu.evaluation import metrics

    accuracy = metrics.cluster_accuracy
    namespace = {"cluster_accuracy": accuracy}
    fn = eval("lambda a, b: cluster_accuracy(a, b)", namespace)   # defined in a notebook-like namespace
    with exercises.without_kit(fn, accuracy, exercise="matched_agreement"):
        assert metrics.cluster_accuracy is not accuracy and namespace["cluster_accuracy"] is not accuracy
        with pytest.raises(ExerciseFailure, match="matched_agreement calls the kit's sela_edu.evaluation.metrics.cluster_accuracy"):
            fn(np.zeros(3, int), np.zeros(3, int))
    assert metrics.cluster_accuracy is accuracy and namespace["cluster_accuracy"] is accuracy
    assert fn(np.zeros(3, int), np.zeros(3, int)) == 1.0
