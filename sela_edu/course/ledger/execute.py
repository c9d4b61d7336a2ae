"""What each kind of ledger run does and measures (the runs themselves are data in
:mod:`sela_edu.course.ledger.runs`):

* ``train``: the trainer (:func:`sela_edu.training.train`) at the profile's schedule with the setting's
  overrides, on the full or an imbalanced training set (notebook 05's subsets), then the kit's one
  evaluation (:func:`sela_edu.evaluation.evaluate`: weighted kNN k = 10, linear probe, head 0's NMI on
  the test split), with the same balanced kNN memory / probe training set for every network;
* ``transfer``: a fresh network trained on the labels a ``train`` run saved
  (:func:`sela_edu.training.transfer_labels`), evaluated the same way;
* ``collapse``: notebook 02's label/train loop (:func:`sela_edu.course.studies.objective.self_training`) with
  labels from the argmax of the scores (no equipartition) or from the label step;
* ``timing``: notebook 07's harness (:func:`sela_edu.course.studies.timing.label_step_timings`) at growing N and
  K, and the kit's label step against the official algorithm
  (:func:`sela_edu.labelling.reference.reference_self_label`) on the same scores.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sela_edu.course.studies.imbalance_study import imbalance_subsets
from sela_edu.course.ledger.runs import LedgerProfile, Run, base_config, setting_specs
from sela_edu.course.studies.objective import self_training
from sela_edu.course.studies.timing import label_step_timings, scaling_fit
from sela_edu.files import writing_whole
from sela_edu.data import load_dataset, make_loader
from sela_edu.evaluation import evaluate, metrics
from sela_edu.labelling import self_label
from sela_edu.labelling.reference import reference_self_label
from sela_edu.models import build_model
from sela_edu.training import export_labels_csv, read_labels_csv, train, transfer_labels
from sela_edu.training.schedule import subset_indices

#: the evaluation's neighbours: the paper's final kNN figure uses k = 10
KNN_K = 10


class LedgerContext:
    """The data every run of one ledger shares, loaded once: the training and test splits, and the
    balanced evaluation split (``profile.eval_images`` of the training split, seed 0, the same for
    every network). Labels of runs that a label transfer reads go to ``folder/labels/``."""

    def __init__(self, profile: LedgerProfile, folder: str | os.PathLike, data_root: str | None = None):
        self.profile, self.folder, self.data_root = profile, Path(folder), data_root
        self.sources = {s.source for s in setting_specs(profile).values() if s.source}

    @cached_property
    def train(self):
        return load_dataset(self.profile.dataset, "train", root=self.data_root)

    @cached_property
    def test(self):
        return load_dataset(self.profile.dataset, "test", root=self.data_root)

    @cached_property
    def eval_split(self):
        keep = subset_indices(len(self.train), self.profile.eval_images, 0)
        return self.train.subset(keep) if keep is not None else self.train

    def positions(self, subset: str, seed: int) -> torch.Tensor:
        """Positions in the training split of the images of ``subset`` (notebook 05's settings)."""
        return imbalance_subsets(self.train.targets, (subset,), seed=seed)[subset]

    def labels_path(self, run_name: str) -> Path:
        return self.folder / "labels" / f"{run_name}.csv"


def evaluation_measures(model, ctx: LedgerContext) -> dict[str, float]:
    """kNN (k = 10) and linear-probe accuracy (%) of the 256-d features, and head 0's NMI, on the test split."""
    # where the profile trains (the gpu profile: cuda), it evaluates too; the recorded ledger is all CPU
    device = ctx.profile.overrides.get("device", "cpu")
    ev = evaluate(model, ctx.eval_split, ctx.test, knn_k=KNN_K, probe=True, heads=True, device=device)
    return {"knn": 100.0 * ev.knn["features"][KNN_K], "linear": 100.0 * ev.linear["features"],
            "nmi": ev.heads[0]["nmi"]}


def _save_labels(path: Path, labels: torch.Tensor, positions: torch.Tensor) -> None:
    """The run's labels with each image's position in the training split, written whole (temp + rename)."""
    with writing_whole(path) as tmp:
        export_labels_csv(tmp, labels, positions)


def run_train(run: Run, ctx: LedgerContext) -> dict[str, Any]:
    config = base_config(ctx.profile, seed=run.seed, **run.setting.overrides)
    positions = ctx.positions(run.setting.subset, run.seed)
    data = ctx.train.subset(positions)
    result = train(config, data, progress=False)
    trained = positions[result.indices] if result.indices is not None else positions
    measures = evaluation_measures(result.model, ctx)
    measures["labels_nmi"] = metrics.nmi(ctx.train.targets[trained], result.labels[0])
    measures.update(label_balance(result, config))
    if run.setting.name in ctx.sources:
        _save_labels(ctx.labels_path(run.name), result.labels, trained)
    return {"measures": measures, "config": config.to_dict(), "images": len(trained),
            "train_seconds": result.timings.get("seconds"), "relabel_seconds": result.timings.get("relabel_seconds")}


def label_balance(result, config) -> dict[str, float]:
    """The share of the run's time spent on label steps (%), and its training labels' largest cluster as a
    multiple of N/K (the largest over heads): SwAV's are the argmax of each image's latest batch codes."""
    from sela_edu.labelling import code_balance

    seconds = result.timings.get("seconds") or 0.0
    largest = max(code_balance(result.labels[h], k)["largest"] for h, k in enumerate(config.cluster_list()))
    return {"relabel_share": 100.0 * result.timings.get("relabel_seconds", 0.0) / seconds if seconds else 0.0,
            "largest_cluster": largest}


def run_transfer(run: Run, ctx: LedgerContext) -> dict[str, Any]:
    source = f"{run.setting.source}_s{run.seed}"
    path = ctx.labels_path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the labels of {source} are missing (they are written with its "
                                f"result): delete {source}.json so that it runs again")
    labels, positions = read_labels_csv(path, return_indices=True)
    # the source's own images, given directly: no second subset
    config = base_config(ctx.profile, seed=run.seed, max_images=None, **run.setting.overrides)
    result = transfer_labels(config, ctx.train.subset(positions), labels, progress=False)
    return {"measures": evaluation_measures(result.model, ctx), "config": result.config.to_dict(),
            "images": len(positions), "train_seconds": result.timings.get("seconds")}


def run_collapse(run: Run, ctx: LedgerContext) -> dict[str, Any]:
    opts = ctx.profile.collapse
    keep = subset_indices(len(ctx.train), opts["images"], run.seed)
    data = ctx.train.subset(keep) if keep is not None else ctx.train
    x = torch.cat([batch[0] for batch in make_loader(data, 512, train=False)])
    k = opts["clusters"]

    def fresh_network():
        torch.manual_seed(run.seed)   # both loops start from this same network
        return build_model("smallcnn", num_heads=1, num_clusters=k, in_channels=data.num_channels,
                           image_size=data.image_size)

    if run.setting.overrides["relabel"] == "argmax":
        relabel = lambda s: s.argmax(1)  # noqa: E731
    else:
        relabel = lambda s: self_label(s, opts["lam"], tol=1e-5, max_iter=5000).labels  # noqa: E731
    loop = self_training(x, relabel, make_network=fresh_network, clusters=k, rounds=opts["rounds"],
                         steps=opts["steps"], lr=opts["lr"], seed=run.seed)
    sizes = loop.sizes[-1]
    return {"measures": {"nonempty": loop.nonempty_clusters() / k, "nmi": metrics.nmi(data.targets, loop.labels),
                         "largest": float(sizes.max()) / len(x)},
            "cluster_sizes": [int(v) for v in sizes]}


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_timing(run: Run, ctx: LedgerContext) -> dict[str, Any]:
    opts = ctx.profile.timing
    common = dict(lam=opts["lam"], storage_dtype=torch.float32, device="cpu", seed=run.seed)
    by_n = label_step_timings(list(opts["sizes"]), opts["k"], **common)
    by_k = [label_step_timings([opts["n_k"]], k, **common)[0] | {"k": k} for k in opts["ks"]]
    g = torch.Generator().manual_seed(run.seed)
    scores = torch.randn(opts["n_k"], opts["k"], generator=g) * 0.3   # 07's random scores
    self_label(scores, opts["lam"])                                    # warm-up: kernel compilation
    t0 = time.perf_counter()
    kit = self_label(scores, opts["lam"])
    seconds_kit = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = reference_self_label(scores.numpy(), opts["lam"])
    seconds_reference = time.perf_counter() - t0
    return {"measures": {"slope_n": scaling_fit(by_n, opts["k"])["slope"],
                         "slope_k": _slope([r["k"] for r in by_k], [r["per_pass"] for r in by_k]),
                         "seconds_kit": seconds_kit, "seconds_reference": seconds_reference,
                         "label_agreement": metrics.nmi(kit.labels, ref.labels)},
            "by_n": by_n, "by_k": by_k, "passes_kit": int(kit.passes), "iterations_reference": int(ref.iterations)}


RUNNERS = {"train": run_train, "transfer": run_transfer, "collapse": run_collapse, "timing": run_timing}


def execute_run(run: Run, ctx: LedgerContext) -> dict[str, Any]:
    """Run ``run`` and return what it measured (``measures``) and what else is worth keeping."""
    torch.manual_seed(run.seed)
    return RUNNERS[run.setting.kind](run, ctx)


__all__ = ["KNN_K", "LedgerContext", "evaluation_measures", "run_train", "run_transfer", "run_collapse",
           "run_timing", "RUNNERS", "execute_run"]
