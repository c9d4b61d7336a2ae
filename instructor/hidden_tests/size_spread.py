# hidden: a collapsed labelling (everything in one of 10 clusters), and a tensor input
import numpy as np
import torch

from sela_edu.course.teaching import exercises as _exercises
from sela_edu.evaluation import metrics as _metrics

with _exercises.without_kit(size_spread, _metrics.cluster_size_spread, exercise="size_spread"):  # it is the answer
    _collapsed = size_spread(np.zeros(40, dtype=np.int64), 10)
    _equal = size_spread(torch.arange(30) % 3, 3)
_small, _large = _collapsed
assert np.isclose(float(_small), 0.0) and np.isclose(float(_large), 10.0), "collapse: (0, K)"
_small, _large = _equal
assert np.isclose(float(_small), 1.0) and np.isclose(float(_large), 1.0), "an equipartition gives (1, 1)"
