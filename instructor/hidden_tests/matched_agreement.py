# hidden: different numbers of clusters on the two sides (the match leaves some ids unmatched)
import numpy as np
from scipy.optimize import linear_sum_assignment

from sela_edu.course.teaching import exercises as _exercises
from sela_edu.evaluation import metrics as _metrics

_rng = np.random.default_rng(11)
_a = _rng.integers(0, 3, size=500)
_b = np.where(_rng.random(500) < 0.7, (_a + 1) % 3, _rng.integers(0, 4, size=500))
_counts = np.zeros((3, 4))
np.add.at(_counts, (_a, _b), 1)
_rows, _cols = linear_sum_assignment(_counts, maximize=True)
with _exercises.without_kit(matched_agreement, _metrics.cluster_accuracy, exercise="matched_agreement"):  # the answer
    _got = float(matched_agreement(_a.copy(), _b.copy()))
assert np.isclose(_got, _counts[_rows, _cols].sum() / 500)
