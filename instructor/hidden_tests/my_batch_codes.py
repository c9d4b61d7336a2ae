# hidden: a batch bigger than the prototypes' count, one row, and numpy-free torch input of float64
import torch

from sela_edu.course.teaching import exercises as _exercises
from sela_edu import labelling as _labelling

_g = torch.Generator().manual_seed(2020)
_scores = torch.rand(64, 8, generator=_g) * 2 - 1
with _exercises.without_kit(my_batch_codes, _labelling.batch_codes, exercise="my_batch_codes"):  # the answer
    _codes = torch.as_tensor(my_batch_codes(_scores.clone(), 0.05, 3)).double()
    _one = torch.as_tensor(my_batch_codes(_scores[:1].clone(), 0.05, 3)).double()
_want = _labelling.batch_codes(_scores, 0.05, 3).double()
assert _codes.shape == (64, 8), "B x K codes, one row per image"
assert torch.allclose(_codes.sum(dim=1), torch.ones(64, dtype=torch.float64), atol=1e-4), "rows sum to 1"
assert torch.allclose(_codes, _want, rtol=1e-4, atol=1e-6), "64 rows, 8 prototypes: SwAV's codes"
assert torch.allclose(_one.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-4), "a batch of one row"
