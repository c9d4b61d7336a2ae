"""SeLa (Asano et al., 2020): labels by optimal transport on the scores of the whole training set, solved
per head (:func:`~sela_edu.labelling.self_label`); and SeLa-v2 (SwAV's appendix), the same label step on
normalised prototypes behind a projection head, with a temperature and multi-crop (all set by its config)."""

from __future__ import annotations

from sela_edu.training.labelstep import heads_to_solve, scoring_pass
from sela_edu.training.methods.base import Method
from sela_edu.training.relabelling import relabel_from_kept
from sela_edu.training.state import has_kept_scores, keeps_head_outputs


class Sela(Method):
    name = "sela"

    def new_labels(self, s, loop, previous, part):
        config = self.config
        heads = heads_to_solve(config, loop.relabel_count, len(s.ks))
        init = [loop.potentials[h] if config.warm_start else None for h in heads]
        if keeps_head_outputs(config) and has_kept_scores(loop, len(s.ks)):
            results = relabel_from_kept([loop.score_buffers[h] for h in heads], tol=config.label_tol,
                                        max_iter=config.label_max_iter, init=init, timings=part)
        else:
            results = scoring_pass(s, loop, heads, init, part)
        new, rows = previous.clone(), []
        for h, start, result, seconds in zip(heads, init, results, part["head_seconds"]):
            new[h] = result.labels.cpu()
            loop.potentials[h] = result.cluster_potential.cpu()
            rows.append({"epoch": loop.epoch + 1, "step": loop.step, "head": h, "warm": start is not None,
                         "passes": result.passes, "converged": bool(result.converged),
                         "error": float(result.error), "seconds": float(seconds)})
        loop.last_results = results
        return new, rows


class SelaV2(Sela):
    name = "sela-v2"
