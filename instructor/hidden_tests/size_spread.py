# hidden: a collapsed labelling (everything in one of 10 clusters), and a tensor input
import numpy as np
import torch

_small, _large = size_spread(np.zeros(40, dtype=np.int64), 10)
assert np.isclose(float(_small), 0.0) and np.isclose(float(_large), 10.0), "collapse: (0, K)"
_small, _large = size_spread(torch.arange(30) % 3, 3)
assert np.isclose(float(_small), 1.0) and np.isclose(float(_large), 1.0), "an equipartition gives (1, 1)"
