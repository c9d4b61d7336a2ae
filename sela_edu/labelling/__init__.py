"""The label step of SeLa: optimal transport from N images to K equal-sized (or prior-sized) clusters,
solved on streamed scores.

SeLa's label step (Asano et al., ICLR 2020, eq. 6-8) finds the assignment ``Q`` of N images to K clusters
that maximises ``<Q, log P>`` subject to equal cluster sizes, relaxed by an entropy term of weight
``1/lam``. The solution has the form ``Q = diag(a) P^lam diag(b)``; the hard label of image i is the
argmax of row i of ``Q``. One module per job:

* :mod:`.buffer`: :class:`ScoreBuffer`, the scores streamed in block by block and stored as
  ``P = exp(lam * scores)``, shifted so that nothing underflows, in float32, bfloat16 or float16;
* :mod:`.semidual`: the problem as a convex function of the K cluster potentials alone (the rows of the
  plan are exact after every row rescaling), one pass over ``P`` per evaluation;
* :mod:`.optimisers`: Sinkhorn-Knopp, L-BFGS (tens of passes on real scores where Sinkhorn-Knopp needs
  hundreds to thousands) and Newton's method with the exact K x K Hessian near the optimum;
* :mod:`.solve`: :func:`self_label` (input checks, backend, method, labels) and :class:`SelfLabelResult`;
* :mod:`._kernels`: the numba kernels that form and read ``P`` at memory speed;
* :mod:`.checks`, :mod:`.allreduce`: input checks; the all-reduce of K-vectors between ranks;
* :mod:`.reference`: :func:`reference_self_label`, the official code's algorithm in NumPy, to cross-check;
* :mod:`.synthetic`: :func:`synthetic_scores`, benchmark scores shaped like a trained network's;
* :mod:`.batch_codes`: :func:`batch_codes`, SwAV's label step: a few Sinkhorn-Knopp iterations on one batch.

This package imports nothing else of the kit (a test holds the rule).
"""

from sela_edu.labelling.batch_codes import batch_codes, code_balance
from sela_edu.labelling.buffer import ScoreBuffer
from sela_edu.labelling.reference import ReferenceResult, reference_self_label
from sela_edu.labelling.semidual import marginal_error
from sela_edu.labelling.solve import SelfLabelResult, self_label
from sela_edu.labelling.synthetic import synthetic_scores

__all__ = ["SelfLabelResult", "ScoreBuffer", "self_label", "ReferenceResult", "reference_self_label", "marginal_error", "synthetic_scores",
           "batch_codes", "code_balance"]
