"""Checkers of notebooks 03 and 04: the weighted kNN vote, the multi-head loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sela_edu.course.teaching.exercises.checking import ExerciseFailure, as_numbers, call_answer, passed


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
        out = call_answer(fn, np.array([sims]), np.array([labels]), classes, temperature, what="weighted_knn_vote")
        pred = as_numbers(out, "the predictions")
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
    out = call_answer(fn, sims.numpy().copy(), train_y[idx].numpy().copy(), classes, temperature,
                      what="weighted_knn_vote")
    got = as_numbers(out, "the predictions")
    if got.shape != (n,):
        hint = " (did you return the vote totals? take the argmax over classes)" if got.shape == (n, classes) else ""
        raise ExerciseFailure(f"expected one prediction per test point, shape ({n},), got {got.shape}{hint}")
    wrong = int((got.astype(np.int64) != want).sum())
    if wrong:
        raise ExerciseFailure(
            f"{wrong} of {n} predictions differ from the weighted vote: sum exp(s / T) per class over the k "
            "neighbours (e.g. with np.add.at or a one-hot matrix) and take the argmax over classes"
        )
    return passed("each neighbour votes with weight exp(similarity / temperature).", quiet)


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
    out = call_answer(fn, [s for s in scores], labels.clone(), what="multihead_loss")
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
        return passed("every head is scored against its own labels, and the heads are averaged.", quiet)
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
