"""The backbone run's heads: the kit's trainer against the loop it replaced, on the same frozen features.

``sela-edu label FOLDER --backbone B`` trains new heads on B's frozen features. Until commit 82578fc it
trained them in a small SGD loop of its own; since then the kit's trainer does (preset
``folder-backbone``, arch ``feature-mlp``, data :class:`~sela_edu.data.features.FeatureData`). This script
keeps a copy of the deleted loop (:func:`deleted_loop`, as it was, from ``git show
82578fc^:sela_edu/apps/label_folder.py``) and, for every seed, labels the same features with

* ``deleted``: the deleted loop, as it was (its own random draws, every label step solved from scratch);
* ``trainer``: what ``label --backbone`` runs now (the folder-backbone preset through ``train``; the
  final labels from the trained heads' scores, as :mod:`sela_edu.apps.label_folder` computes them);
* ``deleted+warm``: the deleted loop with the trainer's warm start (each label step starts from the
  previous one's cluster potentials): the one setting in which the two differ, beside their draws;
* ``deleted on the trainer's draws``: the deleted loop's arithmetic fed the trainer's own random draws
  (its network's initial weights; its loader's batches, noise and dropout masks) with warm start,
  compared with the trainer's labels bit for bit: equal labels mean that nothing else differs
  (learning-rate schedule, label steps' timing and count, head init's distribution, noise, dropout,
  batches, eval mode when scoring, storage dtype, lambda). With several heads the initial weights differ
  by draw only: the deleted loop created every head before drawing their N(0, 0.01) weights, the
  kit's model draws each head's in turn.

and prints each labelling's NMI against the hidden classes, the mean and spread over the seeds, and the
mean of the per-seed differences with its standard error.

The features: N Fashion-MNIST training images written as PNGs (``bench_label_folder.write_folder``,
the folder ``bench_label_folder.py`` labels) through ``label_folder(..., backbone=B)``'s feature pass.
``--backbone trained`` (default): the ``model.pt`` of a ``sela-edu label`` run on that folder (trained
once, then reused from ``--work``); ``--backbone random``: a seeded untrained small CNN; or any file
``--backbone`` takes.

    SELA_DATA_ROOT=/path/to/data python benchmarks/backbone_heads.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class _FeatureHeads(nn.Module):
    """The deleted loop's network: standardise, a 512-d hidden layer (BatchNorm, ReLU), one linear head per
    clustering (as it was)."""

    def __init__(self, dim: int, ks: list[int], mean: torch.Tensor, std: torch.Tensor, hidden: int = 512):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList(nn.Linear(hidden, k) for k in ks)
        for head in self.heads:
            nn.init.normal_(head.weight, 0.0, 0.01)
            nn.init.zeros_(head.bias)

    def forward(self, f: torch.Tensor) -> list[torch.Tensor]:
        h = self.body((f - self.mean) / self.std)
        return [head(h) for head in self.heads]


def deleted_loop(features: torch.Tensor, ks: list[int], *, epochs: int = 50, lam: float = 10.0, seed: int = 0,
                 batch_size: int = 256, warm_start: bool = False, draws=None) -> torch.Tensor:
    """The deleted ``_train_feature_heads`` and its final labels (num_heads x N), as they were.

    Two departures on request only: ``warm_start`` (each label step starts from the previous one's
    cluster potentials, as the trainer's do) and ``draws`` (:func:`trainer_draws`: the trainer's initial
    weights and its loader of augmented, standardised batches, instead of the loop's own draws).
    """
    from sela_edu.apps.label_folder import label_step_labels
    from sela_edu.labelling import self_label

    torch.manual_seed(seed)
    n, dim = features.shape
    std = features.std(0)
    heads = _FeatureHeads(dim, ks, features.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std)))
    batches = None
    if draws is not None:
        batches, start = draws
        heads.load_state_dict({**heads.state_dict(), **start})
    opt = torch.optim.SGD(heads.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    g = torch.Generator().manual_seed(seed)
    labels = torch.stack([(torch.arange(n) % k)[torch.randperm(n, generator=g)] for k in ks])
    batch_size = max(2, min(batch_size, n))
    potentials = None
    for epoch in range(epochs):
        heads.eval()
        with torch.no_grad():
            results = self_label(heads(features), lam, init=potentials)
        if warm_start:
            potentials = [r.cluster_potential for r in results]
        labels = torch.stack([r.labels.cpu() for r in results])
        heads.train()
        for idx, outputs in _deleted_loop_batches(heads, features, batch_size, g, batches, epoch):
            loss = torch.stack([F.cross_entropy(o, labels[h, idx]) for h, o in enumerate(outputs)]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    heads.eval()
    with torch.no_grad():
        return label_step_labels(heads(features), lam)


def _deleted_loop_batches(heads: _FeatureHeads, features, batch_size, g, batches, epoch):
    """(index, head outputs) per batch: the deleted loop's own draws, or ``batches``' (augmented and
    standardised already, so they enter after the network's standardisation)."""
    if batches is not None:
        batches.set_epoch(epoch)
        for x, _, idx in batches:
            hidden = heads.body(x)
            yield idx, [head(hidden) for head in heads.heads]
        return
    n = features.shape[0]
    order = torch.randperm(n, generator=g)
    for b in range(max(1, n // batch_size)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        f = features[idx]
        f = F.dropout(f + 0.1 * f.std(0, keepdim=True) * torch.randn(f.shape, generator=g), 0.2)
        yield idx, heads(f)


def trainer_labels(features: torch.Tensor, ks: list[int], *, seed: int, lam: float = 10.0, epochs: int | None = None,
                   batch_size: int | None = None) -> torch.Tensor:
    """What ``label --backbone`` runs on ``features`` (``label_folder._label_features``): the folder-backbone
    preset through ``train``, then the label step on the trained heads' scores."""
    from sela_edu.apps.label_folder import _label_features

    with tempfile.TemporaryDirectory() as tmp:
        _, labels, _, _, _ = _label_features(features, ks, epochs=epochs, batch_size=batch_size, lam=lam, seed=seed,
                                             device="cpu", ckpt_dir=Path(tmp) / "checkpoints", progress=False,
                                             callback=None, heads_path=Path(tmp) / "heads.pt", backbone_info={})
    return labels


def trainer_draws(features: torch.Tensor, ks: list[int], seed: int, batch_size: int | None = None):
    """The trainer's random draws for these features and seed: its training loader (batches, noise and
    dropout masks) and its network's initial weights, under the deleted loop's names."""
    from sela_edu.data.features import FeatureData, feature_loader
    from sela_edu.training import build_for_config
    from sela_edu.training.presets import folder_backbone_config

    data = FeatureData.from_features(features)
    config = folder_backbone_config(len(data), ks, seed=seed, device="cpu", batch_size=batch_size)
    initial = build_for_config(config, data).state_dict()   # what train() starts from: the same seed, the same draws
    start = {key.replace("backbone.", "body.", 1): value for key, value in initial.items()}
    return feature_loader(data, config.batch_size, train=True, seed=config.seed), start


def folder_features(images: int, backbone: str, work: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's features of the benchmark folder's images (``label --backbone``'s feature pass, read
    from its checkpoint folder) and their hidden classes."""
    from sela_edu.apps.label_folder import label_folder
    from sela_edu.training.checkpoint import load_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parent))   # the folder is bench_label_folder.py's
    from bench_label_folder import write_folder

    folder = work / f"fashion{images}"
    truth_csv = write_folder(folder, images)
    backbone = _backbone_file(backbone, folder, work)
    out = work / f"features-{Path(backbone).stem}"
    result = label_folder(folder, out, clusters=10, epochs=1, backbone=backbone, progress=False, restart=True)
    features = torch.cat(load_checkpoint(out / "checkpoints" / "features.pt")["blocks"])
    with open(truth_csv, newline="") as handle:
        truth = {row["path"]: int(row["class"]) for row in csv.DictReader(handle)}
    return features, torch.tensor([truth[p] for p in result.paths])


def _backbone_file(backbone: str, folder: Path, work: Path) -> str:
    """``trained``: a `sela-edu label` run's model.pt on the folder (trained once); ``random``: an untrained
    seeded small CNN in the same file format; anything else as ``--backbone`` takes it."""
    from sela_edu.apps.label_folder import label_folder
    from sela_edu.models import build_model

    if backbone == "trained":
        run = work / f"backbone-run-{folder.name}"
        if not (run / "model.pt").is_file():
            print(f"training the backbone: sela-edu label {folder} --output {run}", flush=True)
            label_folder(folder, run, clusters=10, seed=0, progress=False)
        return str(run / "model.pt")
    if backbone == "random":
        torch.manual_seed(0)
        model = build_model("smallcnn", num_heads=1, num_clusters=10, in_channels=1, image_size=32)
        path = work / "random-smallcnn.pt"
        torch.save({"build_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict(),
                    "data": {"mean": [0.286], "std": [0.353]}}, path)
        return str(path)
    return backbone


def _differing(a: torch.Tensor, b: torch.Tensor) -> str:
    return "equal bit for bit" if torch.equal(a, b) else f"{int((a != b).sum())} of {a.numel()} differ"


def _summary(name: str, values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{name}: mean NMI {statistics.mean(values):.3f} +- {spread:.3f} (std over {len(values)} seeds)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backbone", default="trained", help="trained, random, or a file --backbone takes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clusters", type=int, nargs="+", default=[10], help="K of every head")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "sela-label-bench"))
    args = parser.parse_args(argv)

    from sela_edu.evaluation.metrics import nmi

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    features, classes = folder_features(args.images, args.backbone, work)
    print(f"features: {tuple(features.shape)} from backbone {args.backbone!r}; heads {args.clusters}; "
          f"NMI of head 0 against the hidden classes", flush=True)
    columns = ("deleted", "trainer", "deleted+warm")
    rows: dict[str, list[float]] = {c: [] for c in columns}
    print("| seed | " + " | ".join(columns) + " | deleted+warm's labels against deleted's "
          "| deleted on the trainer's draws against trainer | seconds |")
    print("| --- " * (len(columns) + 4) + "|", flush=True)
    for seed in args.seeds:
        t0 = time.perf_counter()
        labels = {"deleted": deleted_loop(features, args.clusters, seed=seed),
                  "trainer": trainer_labels(features, args.clusters, seed=seed),
                  "deleted+warm": deleted_loop(features, args.clusters, seed=seed, warm_start=True)}
        same = deleted_loop(features, args.clusters, seed=seed, warm_start=True,
                            draws=trainer_draws(features, args.clusters, seed))
        for c in columns:
            rows[c].append(nmi(classes, labels[c][0]))
        print(f"| {seed} | " + " | ".join(f"{rows[c][-1]:.3f}" for c in columns)
              + f" | {_differing(labels['deleted+warm'], labels['deleted'])} | {_differing(same, labels['trainer'])} "
              f"| {time.perf_counter() - t0:.0f} |", flush=True)
    print()
    for c in columns:
        print(_summary(c, rows[c]))
    for other in ("deleted+warm", "trainer"):
        diffs = [a - b for a, b in zip(rows[other], rows["deleted"])]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        print(f"{other} - deleted: {statistics.mean(diffs):+.3f} +- {se:.3f} (mean of the per-seed differences, "
              f"standard error); lower on {sum(d < 0 for d in diffs)} of {len(diffs)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
