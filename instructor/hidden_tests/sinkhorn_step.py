# hidden: a larger, lopsided problem; one step is a row then a column rescaling, nothing else
import numpy as np

from sela_edu.course.teaching import exercises as _exercises
from sela_edu.ot import sinkhorn as _sinkhorn

_rng = np.random.default_rng(2024)
_Q = _rng.uniform(0.001, 3.0, size=(9, 6))
_a = _rng.uniform(0.1, 5.0, size=9)
_b = _rng.uniform(0.1, 5.0, size=6)
_b *= _a.sum() / _b.sum()
with _exercises.without_kit(sinkhorn_step, _sinkhorn, exercise="sinkhorn_step"):   # the kit's solver is the answer
    _out = np.asarray(sinkhorn_step(_Q.copy(), _a.copy(), _b.copy()), dtype=float)
assert _out.shape == _Q.shape, "sinkhorn_step must return a matrix shaped like Q"
assert np.allclose(_out.sum(axis=0), _b), "after one step the columns must sum to b"
_R = _out / _Q        # diag(u) Q diag(v): the ratio is rank one
assert np.allclose(_R * _R[0, 0], _R[:, :1] * _R[:1, :]), "a Sinkhorn step only rescales rows and columns"
_rows_first = _Q * (_a / _Q.sum(axis=1))[:, None]
assert np.allclose(_out, _rows_first * (_b / _rows_first.sum(axis=0))[None, :]), "rows first, then columns"
