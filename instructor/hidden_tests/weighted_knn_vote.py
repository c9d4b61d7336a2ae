# hidden: another temperature, more classes and neighbours
import numpy as np

_rng = np.random.default_rng(9)
_s = np.sort(_rng.uniform(-1.0, 1.0, size=(400, 15)), axis=1)[:, ::-1].copy()
_y = _rng.integers(0, 9, size=(400, 15))
_votes = np.zeros((400, 9))
np.add.at(_votes, (np.arange(400)[:, None], _y), np.exp(_s / 0.05))
_got = np.asarray(weighted_knn_vote(_s.copy(), _y.copy(), 9, 0.05)).astype(int)
assert np.array_equal(_got, _votes.argmax(1)), "the temperature is a parameter: use the one passed in"
