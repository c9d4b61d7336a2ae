# hidden: a bigger problem where the column scaling changes most labels
import numpy as np

_rng = np.random.default_rng(8)
_P = _rng.uniform(0.01, 1.0, size=(300, 12))
_r = _rng.uniform(0.1, 10.0, size=300)
_c = _rng.uniform(0.01, 5.0, size=12)
_got = np.asarray(labels_from_plan(_P.copy(), _r.copy(), _c.copy())).astype(int)
assert np.array_equal(_got, np.argmax(_P * _r[:, None] * _c[None, :], axis=1)), "argmax of diag(r) P diag(c)"
