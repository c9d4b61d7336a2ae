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

Beside the measured throughput it prints the CEILING: forward and backward (and the SGD step) of the same
network, precision and memory format on ONE batch resident on the device, no augmentation, no data loading,
no relabelling, in images/s, and the ratio measured / ceiling (``--no-ceiling`` skips it). The measured
figure "with relabelling" divides the images trained by the whole wall time of training, label optimisations
included (what the 400-epoch schedule's length follows).

The classroom preset's whole schedule (its own 20 epochs and 40 label optimisations, SeLa only), timed, on
Fashion-MNIST-shaped synthetic images (``--full-schedule`` keeps the preset's epochs and optimisations;
``--budget`` stops training after that many seconds and reports the epochs done and the projected time)::

    python benchmarks/bench_training.py --preset classroom --synthetic 60000 --full-schedule --no-supervised \
        --device cuda --budget 40

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
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the ceiling (forward and backward on one resident batch)")
    parser.add_argument("--ceiling-steps", type=int, default=20, help="timed steps of the ceiling (default 20)")
    parser.add_argument("--full-schedule", action="store_true",
                        help="keep the preset's epochs and label optimisations (ignores --epochs)")
    parser.add_argument("--budget", type=float, default=None,
                        help="stop SeLa training after the epoch that passes this many seconds; report the "
                             "epochs done and the projected time of the whole schedule")
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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def ceiling(config, data, steps: int = 20, warmup: int | None = None) -> dict:
    """Forward, backward and the SGD step of the config's network on ONE batch resident on the device: no
    augmentation, no data loading, no relabelling, no host synchronisation inside the timed steps. The
    precision (autocast in ``amp_dtype`` on CUDA, with a GradScaler for float16), the SGD kernel
    (:func:`~sela_edu.training.build.sgd_and_scaler`) and the memory format (``channels_last``) are the
    trainer's. Returns images/s."""
    import torch.nn.functional as F

    from sela_edu.training.build import build_for_config, sgd_and_scaler

    device = _device(config.device)
    model = build_for_config(config, data).to(device).train()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scaler, use_amp = sgd_and_scaler(config, model, device)
    size = config.image_size or data.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch_size, data.num_channels, size, size, generator=g).to(device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ks = config.cluster_list()
    targets = [torch.randint(0, k, (config.batch_size,), generator=g).to(device) for k in ks]

    def step():
        with torch.autocast(device.type, dtype=getattr(torch, config.amp_dtype), enabled=use_amp):
            outputs = model(x)
            loss = torch.stack([F.cross_entropy(out.float(), t) for out, t in zip(outputs, targets)]).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(min(5, max(1, steps // 4)) if warmup is None else warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - t0
    return {"ceiling_images_per_second": steps * config.batch_size / seconds, "ceiling_steps": steps,
            "ceiling_step_ms": 1e3 * seconds / steps, "ceiling_batch_size": config.batch_size}


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = dict(device=args.device, max_images=args.max_images)
    if not args.full_schedule:
        overrides.update(epochs=args.epochs, nopts=args.epochs)
    if args.dataset:
        overrides["dataset"] = args.dataset
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.score_mode:
        overrides["score_mode"] = args.score_mode
    overrides.update(parse_overrides(args.set))
    config = config_from_preset(args.preset, **overrides)
    data = synthetic_data(config.dataset, args.synthetic) if args.synthetic else load_dataset(config.dataset, "train", root=args.root)

    def stop_after_budget(record, start=time.perf_counter()):
        from sela_edu.training.loop import StopTraining

        if time.perf_counter() - start > args.budget:
            raise StopTraining

    callback = stop_after_budget if args.budget is not None else None

    t0 = time.perf_counter()
    sela = train(config, data, progress=args.progress, callback=callback)
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
        # images trained per second of the whole training wall time, label optimisations included
        "sela_images_per_second_with_relabel": len(sela.labels[0]) * epochs / st["seconds"],
        "schedule_epochs": config.epochs, "schedule_complete": epochs >= config.epochs,
        # the train() call's wall time, set-up included, and what the whole schedule would take at its rate
        "projected_schedule_seconds": sela_wall * config.epochs / max(epochs, 1),
        "budget": args.budget,
    }
    if not args.no_ceiling:
        report.update(ceiling(config, data, steps=args.ceiling_steps))
        report["ratio_to_ceiling"] = report["sela_images_per_second"] / report["ceiling_images_per_second"]
        report["ratio_to_ceiling_with_relabel"] = (report["sela_images_per_second_with_relabel"]
                                                   / report["ceiling_images_per_second"])
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
    print(f"  ... with relabelling          {report['sela_images_per_second_with_relabel']:9.1f} images/s "
          f"(images trained / the whole training time)")
    if "ceiling_images_per_second" in report:
        print(f"  ceiling (one resident batch)  {report['ceiling_images_per_second']:9.1f} images/s "
              f"(forward + backward + SGD step, {report['ceiling_step_ms']:.2f} ms per batch of "
              f"{report['ceiling_batch_size']}; no augmentation, no loading, no relabelling)")
        print(f"  measured / ceiling            {report['ratio_to_ceiling']:9.3f} "
              f"(with relabelling {report['ratio_to_ceiling_with_relabel']:.3f})")
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
    done = "complete" if report["schedule_complete"] else f"stopped by the {report['budget']:g} s budget"
    print(f"  this run: {report['epochs']} of {report['schedule_epochs']} epochs in {report['sela_wall_seconds']:.2f} s "
          f"({done}; the whole {report['schedule_epochs']} epochs: {report['projected_schedule_seconds']:.2f} s)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
