"""How fast does the SeLa training loop run, and where does the time go?

Trains the ``classroom`` preset (Fashion-MNIST, smallcnn, 4 heads) with SeLa and then, in the same
process and on the same network, plain supervised training, and prints:

* training throughput (images per second, label optimisation excluded);
* the share of the wall-clock time spent solving for labels (Sinkhorn-Knopp; target <= 5 %) and
  computing the scores it needs (a forward pass over the whole set per optimisation);
* the epoch time without relabelling next to the supervised epoch time (the loop's own overhead:
  several heads, label look-up).

Not part of the test suite. A quick check that it works::

    python benchmarks/bench_training.py --max-images 1024 --epochs 1

The real measurement (about 2 minutes on 2 CPU cores: 2 epochs of each method)::

    SELA_DATA_ROOT=../shared/data python benchmarks/bench_training.py --epochs 2 --json results/bench_training.json

On a GPU, a CIFAR-10-sized run on synthetic images of the real shape (50,000 x 3 x 32 x 32; no download),
with the hours the full ``cifar-paper`` schedule (400 epochs, 400 optimisations) would take::

    python benchmarks/bench_training.py --preset cifar-paper --synthetic 50000 --epochs 2 --device cuda

The share of relabelling in a run on the classroom schedule's density (2 optimisations per epoch, spaced
quadratically: 4 epochs weigh the one scoring pass of score mode "training" more than 20 would), per
score mode, without the supervised comparison::

    SELA_DATA_ROOT=../shared/data python benchmarks/bench_training.py --epochs 4 --set nopts=8 \
        --set nopt_schedule=quadratic --score-mode training --no-supervised
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sela_edu.data import DATASET_INFO, ImageData, load_dataset  # noqa: E402
from sela_edu.training import config_from_preset, train  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="classroom")
    parser.add_argument("--synthetic", type=int, default=None,
                        help="use this many random images shaped like the preset's data set (timing only)")
    parser.add_argument("--dataset", default=None, help="override the preset's data set (e.g. digits)")
    parser.add_argument("--root", default=None, help="data root (default: $SELA_DATA_ROOT or data/)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per method (one label optimisation each)")
    parser.add_argument("--max-images", type=int, default=None, help="train on a random subset")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--score-mode", default=None, help="the label step's score mode (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the preset, after the options above (repeatable)")
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised comparison run")
    return parser.parse_args(argv)


def parse_overrides(items: list[str]) -> dict:
    """``["nopts=8", "nopt_schedule=quadratic"]`` -> {"nopts": 8, "nopt_schedule": "quadratic"}: numbers,
    lists, true/false and null as JSON, anything else as a string."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    return overrides


def synthetic_data(name: str, n: int) -> ImageData:
    """Random uint8 images with the data set's shape and statistics: measures speed, never accuracy."""
    info = DATASET_INFO[name]
    g = torch.Generator().manual_seed(0)
    shape = (n, info["num_channels"], info["image_size"], info["image_size"])
    return ImageData(name, torch.randint(0, 256, shape, dtype=torch.uint8, generator=g),
                     torch.randint(0, info["num_classes"], (n,), generator=g),
                     [str(c) for c in range(info["num_classes"])], info["mean"], info["std"])


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(epochs=args.epochs, nopts=args.epochs, device=args.device, max_images=args.max_images)
    if args.dataset:
        overrides["dataset"] = args.dataset
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.score_mode:
        overrides["score_mode"] = args.score_mode
    overrides.update(parse_overrides(args.set))
    config = config_from_preset(args.preset, **overrides)
    data = synthetic_data(config.dataset, args.synthetic) if args.synthetic else load_dataset(config.dataset, "train", root=args.root)

    t0 = time.perf_counter()
    sela = train(config, data, progress=args.progress)
    sela_wall = time.perf_counter() - t0
    st = sela.timings
    epochs = len(sela.history)
    report = {
        "preset": args.preset, "dataset": config.dataset, "images": len(sela.labels[0]), "epochs": epochs,
        "score_mode": config.score_mode, "nopts": config.nopts, "nopt_schedule": config.nopt_schedule,
        "overrides": parse_overrides(args.set),
        "heads": config.cluster_list(), "batch_size": config.batch_size, "device": str(sela.model.heads[0].weight.device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "sela_wall_seconds": sela_wall,
        "sela_images_per_second": st["images_per_second"],
        "relabels": st["relabels"],
        "solve_seconds": st["solve_seconds"],
        "score_seconds": st["score_seconds"],
        "solve_share": st["solve_seconds"] / st["seconds"],
        "score_share": st["score_seconds"] / st["seconds"],
        "relabel_share": st["relabel_seconds"] / st["seconds"],
        "relabel_seconds": st["relabel_seconds"],
        "sela_seconds": st["seconds"],
        "sela_epoch_seconds_without_relabel": st["train_seconds"] / epochs,
        "nmi_per_head": sela.history[-1]["nmi"],
    }
    if not args.no_supervised:
        report.update(supervised_comparison(args, overrides, data, report["sela_epoch_seconds_without_relabel"]))
    # the preset's full schedule at the measured rates: its epochs plus its label optimisations
    full = config_from_preset(args.preset)
    per_relabel = (st["score_seconds"] + st["solve_seconds"]) / max(st["relabels"], 1)
    report["projected_full_hours"] = (full.epochs * report["sela_epoch_seconds_without_relabel"]
                                      * len(data) / max(len(sela.labels[0]), 1) + full.nopts * per_relabel) / 3600
    return report


def supervised_comparison(args, overrides: dict, data, sela_epoch_seconds: float) -> dict:
    """Plain supervised training on the same network and data: its epoch time and throughput, and the SeLa
    loop's overhead over it (several heads, label look-up)."""
    t0 = time.perf_counter()
    supervised = train(config_from_preset(args.preset, **{**overrides, "method": "supervised"}), data,
                       progress=args.progress)
    su = supervised.timings
    epoch_seconds = su["train_seconds"] / len(supervised.history)
    return {"supervised_epoch_seconds": epoch_seconds, "supervised_images_per_second": su["images_per_second"],
            "supervised_wall_seconds": time.perf_counter() - t0,
            "overhead_vs_supervised": sela_epoch_seconds / epoch_seconds - 1}


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = run(args)
    print(f"{report['preset']} on {report['dataset']}: {report['images']} images, {report['epochs']} epochs, "
          f"heads {report['heads']}, batch {report['batch_size']}, {report['device']}, "
          f"{report['threads']} threads, score mode {report['score_mode']}, "
          f"{report['nopts']} optimisations ({report['nopt_schedule']})")
    print(f"  SeLa training throughput      {report['sela_images_per_second']:9.1f} images/s")
    if "supervised_epoch_seconds" in report:
        print(f"  supervised throughput         {report['supervised_images_per_second']:9.1f} images/s")
        print(f"  epoch without relabelling     {report['sela_epoch_seconds_without_relabel']:9.2f} s "
              f"(supervised {report['supervised_epoch_seconds']:.2f} s, "
              f"overhead {100 * report['overhead_vs_supervised']:+.1f} %)")
    else:
        print(f"  epoch without relabelling     {report['sela_epoch_seconds_without_relabel']:9.2f} s")
    print(f"  label optimisations           {report['relabels']:9d}")
    print(f"  relabelling (the label step)  {report['relabel_seconds']:9.2f} s = "
          f"{100 * report['relabel_share']:.2f} % of {report['sela_seconds']:.1f} s (target: at most 5 %)")
    print(f"  solving (Sinkhorn-Knopp)      {report['solve_seconds']:9.2f} s = "
          f"{100 * report['solve_share']:.2f} % of the SeLa wall time (target <= 5 %)")
    print(f"  scoring (passes, or forming P from kept scores) {report['score_seconds']:7.2f} s = "
          f"{100 * report['score_share']:.2f} %")
    print(f"  NMI per head after training   {[round(x, 3) for x in report['nmi_per_head'] or []]}")
    print(f"  projected full {report['preset']} schedule  {report['projected_full_hours']:.2f} h at these rates")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
