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
install. Three exercises re-derive a kit function (``sinkhorn_step``: ``sinkhorn(-log Q, a, b, 1,
max_iter=1)``; ``size_spread``: :func:`~sela_edu.evaluation.metrics.cluster_size_spread`; ``matched_agreement``:
:func:`~sela_edu.evaluation.metrics.cluster_accuracy`): their checkers call the student's function with that kit
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
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import numpy as np

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
    "without_kit",
    "EXERCISES",
]


class ExerciseFailure(AssertionError):
    """A wrong answer to an exercise; the message is the hint."""


def _to_numpy(x, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ExerciseFailure(f"{what} should be an array or tensor of numbers, got {type(x).__name__}") from exc


def _call(fn: Callable, *args, what: str):
    if not callable(fn):
        raise ExerciseFailure(f"pass your function itself (e.g. check(my_function)), not {type(fn).__name__}")
    try:
        return fn(*args)
    except NotImplementedError as exc:
        raise ExerciseFailure(
            f"{what} is not written yet: replace the `# YOUR CODE HERE` stub and `raise NotImplementedError`"
        ) from exc


def _done(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"Correct: {message}")


@contextlib.contextmanager
def without_kit(fn: Callable, *kit_functions: Callable, exercise: str) -> Iterator[None]:
    """Inside the block, each of ``kit_functions`` raises :class:`ExerciseFailure` when called.

    Some exercises re-derive a public function of the kit (e.g. ``size_spread`` is
    :func:`sela_edu.evaluation.metrics.cluster_size_spread`), so an answer that only calls it would pass. The
    stand-in replaces the function wherever it is bound: in every loaded ``sela_edu`` module and in the
    namespace ``fn`` was defined in (a notebook's globals, where ``from sela_edu.evaluation.metrics import ...``
    puts it). Everything is restored on leaving."""
    spaces = [vars(module) for name, module in list(sys.modules.items())
              if module is not None and (name == "sela_edu" or name.startswith("sela_edu."))]
    spaces.append(getattr(fn, "__globals__", {}))
    replaced = []
    for kit in kit_functions:
        stand_in = _refused(f"{kit.__module__}.{kit.__name__}", exercise)
        for space in spaces:
            for name, value in list(space.items()):
                if value is kit:
                    space[name] = stand_in
                    replaced.append((space, name, kit))
    try:
        yield
    finally:
        for space, name, kit in replaced:
            space[name] = kit


def _refused(kit_name: str, exercise: str) -> Callable:
    def refused(*args, **kwargs):
        raise ExerciseFailure(f"{exercise} calls the kit's {kit_name}, which is the answer itself: write the "
                              "computation yourself (the kit's function is what the checker compares with)")
    return refused


# --------------------------------------------------------------------------------------------------
# 01: one Sinkhorn iteration


def _sinkhorn_problems():
    rng = np.random.default_rng(0)
    problems = []
    # the totals must agree (else no plan exists) but the entries are uneven, so that a wrong axis or
    # order shows in the sums
    for n, m in ((3, 4), (5, 2), (4, 4)):
        q = rng.uniform(0.05, 1.0, size=(n, m))
        a = rng.uniform(0.5, 2.0, size=n)
        b = rng.uniform(0.5, 2.0, size=m)
        b *= a.sum() / b.sum()
        problems.append((q, a, b))
    return problems


def check_sinkhorn_step(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(Q, a, b)``: one Sinkhorn iteration on a positive matrix ``Q`` (n x m) with source
    masses ``a`` (n) and target masses ``b`` (m): scale each row so it sums to ``a``, then each column
    so it sums to ``b``. Returns the new matrix (the input may be left alone or modified).

    The right answer is the kit's solver after one iteration started from ``K = Q`` (cost
    ``-log Q``, eps 1): ``sinkhorn(-log Q, a, b, 1, max_iter=1)``."""
    from sela_edu.ot import sinkhorn

    for q, a, b in _sinkhorn_problems():
        want = sinkhorn(-np.log(q), a, b, 1.0, max_iter=1)
        with without_kit(fn, sinkhorn, exercise="sinkhorn_step"):
            out = _call(fn, q.copy(), a.copy(), b.copy(), what="sinkhorn_step")
        got = _to_numpy(out, "the returned matrix")
        if got.shape != q.shape:
            hint = " (did you return a vector of sums instead of the rescaled matrix?)" if got.ndim == 1 else ""
            raise ExerciseFailure(f"the result has shape {got.shape}, expected {q.shape} like Q{hint}")
        if not np.all(np.isfinite(got)):
            raise ExerciseFailure("the result contains NaN or inf: did you divide by zero somewhere?")
        if np.allclose(got, want, rtol=1e-6, atol=1e-9):
            continue
        if np.allclose(got, q):
            raise ExerciseFailure("the matrix came back unchanged: did you forget to return the rescaled matrix?")
        rows, cols = got.sum(axis=1), got.sum(axis=0)
        ratio = got / q
        if np.allclose(rows, a) and not np.allclose(cols, b):
            if np.allclose(ratio, ratio[:, :1]):  # every row multiplied by one number: no column step
                raise ExerciseFailure(
                    f"your rows sum to a, but your columns sum to {np.round(cols, 3)}, not to b = {np.round(b, 3)}: "
                    "after scaling the rows, scale the columns by b / (column sums)"
                )
            raise ExerciseFailure(
                "you scaled the columns first and the rows second: the rows now sum to a but the columns "
                f"sum to {np.round(cols, 3)}, not b. Do rows first, then columns"
            )
        if np.allclose(cols, 1.0) and not np.allclose(b, 1.0):
            raise ExerciseFailure(
                "your columns sum to 1, not to b: multiply by the target masses, i.e. scale by b / (column "
                "sums), and the rows by a / (row sums)"
            )
        if np.allclose(cols, b):
            raise ExerciseFailure(
                f"your columns sum to b, but the matrix differs from one row-then-column rescaling (your rows "
                f"sum to {np.round(rows, 3)}): did you scale the rows by a / (row sums) before the column step?"
            )
        raise ExerciseFailure(
            f"your columns sum to {np.round(cols, 3)}, not to b = {np.round(b, 3)}: did you divide by the "
            "row sums (axis=1) for rows and the column sums (axis=0) for columns?"
        )
    return _done("one iteration scales rows to a, then columns to b.", quiet)


# --------------------------------------------------------------------------------------------------
# 02: the equipartition check


def _equipartition_problems():
    """(name, Q, (row_error, col_error)) with the errors known by construction."""
    n, k, d = 12, 4, 0.01
    uniform = np.full((n, k), 1.0 / (n * k))
    hard = np.zeros((n, k))
    hard[np.arange(n), np.arange(n) % k] = 1.0 / n
    moved_in_row = uniform.copy()            # mass moved between two clusters of one image: columns off by d
    moved_in_row[0, 0] += d
    moved_in_row[0, 1] -= d
    moved_in_col = uniform.copy()            # mass moved between two images of one cluster: rows off by d
    moved_in_col[0, 0] += d
    moved_in_col[1, 0] -= d
    collapsed = np.zeros((n, k))
    collapsed[:, 0] = 1.0 / n
    return n, k, d, [
        ("a uniform feasible plan", uniform, (0.0, 0.0)),
        ("a hard equipartition", hard, (0.0, 0.0)),
        ("a plan with mass moved between two clusters", moved_in_row, (0.0, d)),
        ("a plan with mass moved between two images", moved_in_col, (d, 0.0)),
        ("a plan with 10 % of its mass missing", 0.9 * uniform, (0.1 / n, 0.1 / k)),
        ("a collapsed plan (every image in cluster 0)", collapsed, (0.0, 1.0 - 1.0 / k)),
    ]


def check_equipartition(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(Q) -> (row_error, col_error)``: for an N x K assignment matrix ``Q``, the largest
    absolute deviation of the row sums from 1/N (each image carries mass 1/N) and of the column sums
    from 1/K (each cluster receives 1/K of the data: the equipartition constraint)."""
    n, k, d, problems = _equipartition_problems()
    for name, q, want in problems:
        out = _call(fn, q.copy(), what="marginal_errors")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ExerciseFailure("return two numbers: (row_error, col_error)")
        got = tuple(float(_to_numpy(v, "each error").max()) for v in out)
        if np.allclose(got, want, rtol=1e-6, atol=1e-12):
            continue
        if min(got) < -1e-12:
            raise ExerciseFailure(f"on {name} an error came out negative ({np.round(got, 5)}): take the absolute "
                                  "value of the deviation before the maximum")
        if np.allclose(got, want[::-1], rtol=1e-6, atol=1e-12):
            raise ExerciseFailure("your two errors are swapped: return (row_error, col_error)")
        if want == (0.0, 0.0) and np.allclose(got, (abs(1 / n - 1 / k),) * 2):
            raise ExerciseFailure(
                "you compared rows with 1/K and columns with 1/N: rows are the N images (each carries "
                "1/N), columns are the K clusters (each gets 1/K)"
            )
        if want == (0.0, 0.0) and np.allclose(got, (1 - 1 / n, 1 - 1 / k)):
            raise ExerciseFailure(
                "you compared the sums with 1: in SeLa's form Q is a joint distribution (total mass 1), "
                "so rows should sum to 1/N and columns to 1/K"
            )
        if d in want and np.allclose(got, [2 * w for w in want]):
            raise ExerciseFailure("you summed the deviations: the check asks for the largest one (max)")
        if d in want and not np.allclose(got, want) and max(got) < d:
            raise ExerciseFailure(f"on {name} you returned {np.round(got, 5)}: did you average the deviations? "
                                  "The check asks for the largest one (max)")
        raise ExerciseFailure(
            f"on {name} you returned {np.round(got, 5)}, expected {np.round(want, 5)}: the row sums are "
            f"{np.round(q.sum(axis=1)[:4], 4)}... (target 1/N = {1 / n:.4f}); the column sums are "
            f"{np.round(q.sum(axis=0), 4)} (target 1/K = {1 / k:.4f})"
        )
    return _done("rows are checked against 1/N and columns against 1/K.", quiet)


# --------------------------------------------------------------------------------------------------
# 02: hard labels from the plan


def check_labels_from_plan(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(P, r, c) -> labels``: given the N x K matrix ``P`` (= P^lambda up to scaling) and
    Sinkhorn's scaling vectors ``r`` (N) and ``c`` (K), the plan is ``diag(r) P diag(c)``; each image's
    label is the cluster where its row of the plan is largest (an int array of length N)."""
    rng = np.random.default_rng(2)
    n, k = 40, 5
    # Plant the answer: a plan whose row i peaks at planted[i], then hide it behind the scalings
    planted = rng.permutation(np.arange(n) % k)
    plan = rng.uniform(0.05, 0.6, size=(n, k))
    plan[np.arange(n), planted] = 1.0
    r = rng.uniform(0.5, 2.0, size=n)
    c = np.array([0.1, 1.0, 1.2, 0.9, 1.1])      # P = plan / (r c): the raw P favours cluster 0
    p = plan / r[:, None] / c[None, :]
    out = _call(fn, p.copy(), r.copy(), c.copy(), what="labels_from_plan")
    got = _to_numpy(out, "the labels")
    if got.shape != (n,):
        hint = " (did you return the plan instead of argmax over its rows?)" if got.shape == (n, k) else ""
        raise ExerciseFailure(f"expected {n} labels, one per image, got shape {got.shape}{hint}")
    if np.array_equal(got.astype(np.int64), planted):
        return _done("labels are the argmax of the scaled plan, not of the raw scores.", quiet)
    if np.array_equal(got, np.argmax(p, axis=1)):
        raise ExerciseFailure(
            "these are the argmax of the raw scores P: the labels must come from the plan diag(r) P diag(c), "
            "otherwise the equipartition that Sinkhorn found is thrown away"
        )
    if got.min() < 0 or got.max() >= k:
        raise ExerciseFailure("take the argmax over clusters (axis=1), one label per image")
    sizes = np.bincount(got.astype(np.int64).clip(0, k - 1), minlength=k)
    raise ExerciseFailure(
        f"{int((got != planted).sum())} of {n} labels differ from the argmax of the plan diag(r) P diag(c) "
        f"(your cluster sizes: {sizes.tolist()}, the plan's: {np.bincount(planted, minlength=k).tolist()}): "
        "multiply (not divide) the columns by c and the rows by r before the argmax over axis 1"
    )


# --------------------------------------------------------------------------------------------------
# 03: the weighted kNN vote

#: One-row problems where the usual mistakes disagree (temperature 0.1, 4 classes):
#: (similarities, neighbour labels, {variant: predicted class}) with the predictions worked out by hand.
_VOTE_ROWS = (
    ([0.9, 0.5, 0.5], [0, 1, 1], {"right": 0, "majority": 1, "nearest": 0, "sims": 1, "no_t": 1, "times_t": 1}),
    ([0.3, 0.2, -0.25], [0, 1, 1], {"right": 0, "majority": 1, "nearest": 0, "sims": 0, "no_t": 1, "times_t": 1}),
    ([0.8, 0.78, 0.77, 0.76], [2, 3, 3, 3], {"right": 3, "majority": 3, "nearest": 2, "sims": 3, "no_t": 3,
                                             "times_t": 3}),
    ([0.9, 0.9, 0.1, 0.1, 0.1], [0, 0, 1, 1, 1], {"right": 0, "majority": 1, "nearest": 0, "sims": 0, "no_t": 0,
                                                  "times_t": 1}),
)

_VOTE_HINTS = {
    "majority": "this is a plain majority vote (or weights too flat to matter, e.g. exp(similarity * "
                "temperature)): weight each neighbour's vote by exp(similarity / temperature)",
    "nearest": "you took the nearest neighbour's label (k = 1): sum the weighted votes over all k",
    "sims": "you weighted votes by the similarity itself: use exp(similarity / temperature)",
    "no_t": "you used exp(similarity) without the temperature: divide by the temperature (0.1) first",
}


def check_weighted_knn_vote(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(similarities, neighbour_labels, num_classes, temperature) -> predictions``: each test
    point has k neighbours with cosine similarities (n x k) and labels (n x k, ints); each neighbour votes
    for its label with weight exp(similarity / temperature) (Wu et al. 2018, used by SeLa with
    temperature 0.1); the prediction is the class with the largest total weight.

    The right answer is the kit's :func:`~sela_edu.evaluation.weighted_knn` on features whose
    similarities and neighbours are the ones given."""
    import torch

    from sela_edu.evaluation import weighted_knn

    classes, temperature = 4, 0.1
    # hand-made rows first: together they tell each usual mistake from the right vote
    got = []
    for sims, labels, _ in _VOTE_ROWS:
        out = _call(fn, np.array([sims]), np.array([labels]), classes, temperature, what="weighted_knn_vote")
        pred = _to_numpy(out, "the predictions")
        if pred.ndim == 2 and pred.shape[1] > 1:
            raise ExerciseFailure(f"for one test point you returned {pred.shape[1]} numbers (vote totals or weights?): "
                                  "sum the weights per class and take the argmax over classes")
        pred = pred.ravel()
        if pred.shape != (1,):
            raise ExerciseFailure(f"expected one prediction per test point, got shape {pred.shape} for one point")
        got.append(int(pred[0]))
    expected = {variant: [row[2][variant] for row in _VOTE_ROWS] for variant in _VOTE_ROWS[0][2]}
    if got != expected["right"]:
        for variant in ("nearest", "sims", "no_t", "majority"):
            if got == expected[variant]:
                raise ExerciseFailure(_VOTE_HINTS[variant])
        bad = next(i for i, g in enumerate(got) if g != expected["right"][i])
        sims, labels, outcome = _VOTE_ROWS[bad]
        raise ExerciseFailure(f"for similarities {sims} and labels {labels} you predicted {got[bad]}, "
                              f"but the weighted vote gives {outcome['right']}")
    # then a random problem, against the kit's weighted kNN
    g = torch.Generator().manual_seed(3)
    n_train, n, k = 300, 200, 7
    train = torch.nn.functional.normalize(torch.randn(n_train, 5, generator=g, dtype=torch.float64), dim=1)
    train_y = torch.randint(0, classes, (n_train,), generator=g)
    test = torch.nn.functional.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)
    sims, idx = (test @ train.T).topk(k, dim=1)
    want = weighted_knn(train, train_y, test, k=k, sigma=temperature, num_classes=classes).numpy()
    out = _call(fn, sims.numpy().copy(), train_y[idx].numpy().copy(), classes, temperature, what="weighted_knn_vote")
    got = _to_numpy(out, "the predictions")
    if got.shape != (n,):
        hint = " (did you return the vote totals? take the argmax over classes)" if got.shape == (n, classes) else ""
        raise ExerciseFailure(f"expected one prediction per test point, shape ({n},), got {got.shape}{hint}")
    wrong = int((got.astype(np.int64) != want).sum())
    if wrong:
        raise ExerciseFailure(
            f"{wrong} of {n} predictions differ from the weighted vote: sum exp(s / T) per class over the k "
            "neighbours (e.g. with np.add.at or a one-hot matrix) and take the argmax over classes"
        )
    return _done("each neighbour votes with weight exp(similarity / temperature).", quiet)


# --------------------------------------------------------------------------------------------------
# 04: the multi-head loss


def check_multihead_loss(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(scores, labels) -> loss``: ``scores`` is a list of h tensors (N x K_j logits, one per
    head), ``labels`` an h x N int64 tensor of pseudo-labels (row j for head j). The loss is the
    cross-entropy of each head with its own labels, averaged over the batch and then over the heads,
    returned as a scalar tensor that backpropagates to the scores."""
    import torch

    g = torch.Generator().manual_seed(4)
    n, ks = 8, (5, 5, 6)
    probs_right = (0.7, 0.4, 0.2)           # the probability each head gives to its own label, planted
    labels = torch.stack([torch.randint(0, min(ks), (n,), generator=g)] * len(ks))
    labels = (labels + torch.arange(len(ks))[:, None]) % min(ks)   # every head has its own labels
    scores = []
    for h, (k, p) in enumerate(zip(ks, probs_right)):
        prob = torch.full((n, k), (1 - p) / (k - 1), dtype=torch.float64)
        prob[torch.arange(n), labels[h]] = p
        shift = torch.randn(n, 1, generator=g, dtype=torch.float64) * 3   # logits are log-probs up to a row constant
        scores.append((prob.log() + shift).requires_grad_(True))
    ce = [-np.log(p) for p in probs_right]
    want = float(np.mean(ce))
    out = _call(fn, [s for s in scores], labels.clone(), what="multihead_loss")
    if not isinstance(out, torch.Tensor):
        raise ExerciseFailure(f"return a torch tensor (got {type(out).__name__}): the trainer calls "
                              "loss.backward(), so do not convert with .item() or numpy")
    if out.numel() != 1:
        raise ExerciseFailure(f"the loss has shape {tuple(out.shape)}: reduce it to one number, the mean over the "
                              "batch and then over the heads")
    if not out.requires_grad:
        raise ExerciseFailure("the loss does not backpropagate to the scores: build it from the score tensors "
                              "with torch operations (no .detach(), .item() or numpy on the way)")
    got = float(out.detach())
    if np.isclose(got, want, rtol=1e-6):
        return _done("every head is scored against its own labels, and the heads are averaged.", quiet)
    if np.isclose(got, sum(ce), rtol=1e-6):
        raise ExerciseFailure(f"you summed the heads' losses ({got:.4f}): average them (divide by the number of "
                              "heads), so the loss and the learning rate do not depend on h")
    if np.isclose(got, ce[0], rtol=1e-6):
        raise ExerciseFailure("only head 0 contributes: loop over every head's scores and labels")
    # head 0's labels for every head: the other heads' label entries carry (1 - p) / (K - 1), by construction
    with_first = np.mean([ce[0]] + [-np.log((1 - p) / (k - 1)) for k, p in zip(ks[1:], probs_right[1:])])
    if np.isclose(got, with_first, rtol=1e-6):
        raise ExerciseFailure("every head was scored against head 0's labels: head j's labels are row j")
    raw = -float(np.mean([float(s.detach()[torch.arange(n), labels[h]].mean()) for h, s in enumerate(scores)]))
    if np.isclose(got, raw, rtol=1e-6):
        raise ExerciseFailure("you took minus the score of the label (nll_loss on raw scores): scores are logits, "
                              "apply log_softmax first, or use F.cross_entropy, which does")
    raise ExerciseFailure(f"the loss is {got:.4f}, expected {want:.4f} (the heads' cross-entropies are "
                          f"{np.round(ce, 4).tolist()}): F.cross_entropy takes the raw scores (logits), so do not "
                          "apply softmax yourself")


# --------------------------------------------------------------------------------------------------
# 05: how unequal are the clusters?


def check_size_spread(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(labels, k) -> (smallest, largest)``: the sizes of the smallest and the largest of the
    ``k`` clusters, each divided by the equal share N/K (so a perfect equipartition gives (1, 1)).
    Clusters that received no image count, with size 0. Compared with
    :func:`sela_edu.evaluation.metrics.cluster_size_spread`."""
    from sela_edu.evaluation.metrics import cluster_size_spread

    rng = np.random.default_rng(5)
    problems = [
        ("an equipartition", np.repeat(np.arange(4), 5), 4),
        ("labels where clusters 2 and 5 are empty", rng.choice([0, 1, 3, 4], size=60, p=[0.4, 0.3, 0.2, 0.1]), 6),
        ("random labels", rng.integers(0, 8, size=100), 8),
    ]
    for name, labels, k in problems:
        spread = cluster_size_spread(labels, k)
        want = (spread["min"], spread["max"])
        with without_kit(fn, cluster_size_spread, exercise="size_spread"):
            out = _call(fn, labels.copy(), k, what="size_spread")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ExerciseFailure("return two numbers: (smallest, largest)")
        got = tuple(float(_to_numpy(v, "each size").max()) for v in out)
        if np.allclose(got, want):
            continue
        share = labels.size / k
        if np.allclose(got, want[::-1]):
            raise ExerciseFailure("your two numbers are swapped: return (smallest, largest)")
        if np.allclose(got, (want[0] * share, want[1] * share)):
            raise ExerciseFailure(f"on {name} you returned raw counts {got}: divide by the equal share N/K = {share:g}")
        if np.allclose(got, (want[0] / k, want[1] / k)):
            raise ExerciseFailure(f"on {name} you divided by N: the equal share of a cluster is N/K = {share:g}")
        if want[0] == 0 and got[0] > 0:
            raise ExerciseFailure(
                f"on {name} your smallest size is {got[0]:.3g}, but some clusters got no image, so it is 0: "
                "count with np.bincount(labels, minlength=k) (np.unique and plain bincount skip empty clusters)")
        raise ExerciseFailure(f"on {name} you returned {np.round(got, 4)}, expected {np.round(want, 4)} "
                              f"(sizes {np.bincount(labels, minlength=k).tolist()}, equal share {share:g})")
    return _done("sizes are counted for all K clusters and compared with N/K.", quiet)


# --------------------------------------------------------------------------------------------------
# 06: agreement between two labellings


def check_matched_agreement(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(labels_a, labels_b) -> fraction``: cluster ids are arbitrary names, so two labellings
    agree on an image when ``b``'s cluster is matched to ``a``'s; the match is one to one (each id of b
    to at most one id of a) and chosen to maximise the agreement (the Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``). Returns a fraction in [0, 1]. Compared with
    :func:`sela_edu.evaluation.metrics.cluster_accuracy`."""
    from sela_edu.evaluation.metrics import cluster_accuracy, purity

    rng = np.random.default_rng(6)
    a = rng.permutation(np.repeat(np.arange(5), 40))
    rename = np.array([3, 1, 4, 0, 2])
    b = rename[a]                                   # the same partition under other names
    noisy = b.copy()
    flip = rng.random(a.size) < 0.2
    noisy[flip] = rng.integers(0, 5, size=int(flip.sum()))
    split = noisy.copy()
    split[(a == 0) & (rng.random(a.size) < 0.5)] = 5   # one class split over two clusters: purity > one-to-one
    for name, x, y in (("a renamed copy", a, b), ("a renamed copy with 20 % noise", a, noisy),
                       ("labels with one class split in two clusters", a, split)):
        want = cluster_accuracy(x, y)
        with without_kit(fn, cluster_accuracy, exercise="matched_agreement"):
            out = _call(fn, x.copy(), y.copy(), what="matched_agreement")
        got = _to_numpy(out, "the agreement")
        if got.size != 1:
            raise ExerciseFailure(f"return one number (a fraction), got shape {got.shape}")
        got = float(got.ravel()[0])
        if np.isclose(got, want):
            continue
        if np.isclose(got, 100 * want):
            raise ExerciseFailure("that is a percentage: return a fraction in [0, 1]")
        if np.isclose(got, float(np.mean(x == y))):
            raise ExerciseFailure(f"on {name} you compared the ids directly ({got:.2f}): cluster ids are arbitrary, "
                                  "match the clusters first (linear_sum_assignment on the co-occurrence counts)")
        if np.isclose(got, max(purity(x, y), purity(y, x))):
            raise ExerciseFailure(f"on {name} you matched each cluster to its majority class ({got:.3f}): two "
                                  "clusters may then share one class; the match must be one to one (Hungarian)")
        if np.isclose(got, 1 - want):
            raise ExerciseFailure("you returned the disagreement: return the fraction of images that agree")
        raise ExerciseFailure(f"on {name} you returned {got:.4f}, expected {want:.4f}: count co-occurrences of "
                              "(a, b) pairs, find the one-to-one match with the largest total "
                              "(linear_sum_assignment(..., maximize=True)) and divide by N")
    return _done("ids are matched one to one before counting agreement.", quiet)


# --------------------------------------------------------------------------------------------------
# 07: streaming column maxima


def check_column_max(fn: Callable, *, quiet: bool = False) -> None:
    """Check ``fn(blocks) -> maxima``: ``blocks`` is an iterator (read it once) of n_i x K score
    tensors, the rows of an N x K matrix that never exists whole; return the K column maxima, as the
    solver's :class:`~sela_edu.labelling.ScoreBuffer` does before it forms ``exp(scores - max)``."""
    import torch

    g = torch.Generator().manual_seed(7)
    problems = [
        ("scores of both signs", [torch.randn(m, 6, generator=g) for m in (5, 3, 8)]),
        ("all-negative scores (log-probabilities)", [-torch.rand(m, 4, generator=g) - 0.5 for m in (4, 4, 2)]),
        ("one block", [torch.randn(7, 3, generator=g)]),
    ]
    for name, blocks in problems:
        whole = torch.cat(blocks)
        want = whole.amax(dim=0)
        out = _call(fn, iter([b.clone() for b in blocks]), what="column_max")
        got = torch.as_tensor(_to_numpy(out, "the maxima"))
        if got.shape != want.shape:
            hint = (" (that is one value per row: take the maximum over rows, dim=0, one per cluster)"
                    if got.numel() in (whole.shape[0], blocks[-1].shape[0]) else "")
            raise ExerciseFailure(f"expected {want.numel()} column maxima, got shape {tuple(got.shape)}{hint}")
        if torch.allclose(got, want.double()):
            continue
        if torch.allclose(got, blocks[-1].amax(0).double()):
            raise ExerciseFailure("you kept only the last block's maxima: keep a running maximum across blocks "
                                  "(torch.maximum(running, block.amax(0)))")
        if (want < 0).all() and torch.allclose(got, torch.zeros_like(got)):
            raise ExerciseFailure(f"on {name} you returned zeros: you started the running maximum at 0, which beats "
                                  "every negative score; start from -inf (or the first block)")
        raise ExerciseFailure(f"on {name} you returned {got.numpy().round(3)}, expected {want.numpy().round(3)}")
    return _done("a running maximum over the blocks gives the column maxima without the whole matrix.", quiet)


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
}
