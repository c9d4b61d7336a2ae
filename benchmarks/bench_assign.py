"""Record `sela-edu assign`: held-out Fashion-MNIST images put into the clusters of a `sela-edu label` model.

Trains with `sela-edu label` on N training images written as PNG files (the folder of
``bench_label_folder.py``: three sub-folders, one non-image file and one corrupt PNG), then writes M images
of the *test* split as PNG files in the same way (their hidden classes in a CSV outside the folder) and
assigns them with each mode of `sela-edu assign` (argmax, equal, prior). Prints the wall time of every
command and the NMI / ARI / cluster accuracy against the hidden classes (`sela_edu.evaluation.metrics`), beside the
training images' own figures (the labels `label` wrote), and whether `assign --mode equal` on the
training folder gives back exactly the labels `label` wrote.

    SELA_DATA_ROOT=/path/to/data python benchmarks/bench_assign.py --train-images 3000 --test-images 2000
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_label_folder import write_folder  # noqa: E402 - the folders, as the label benchmark writes them

MODES = ("argmax", "equal", "prior")


def run(cmd: list[str]) -> float:
    """Run a command (echoed first), failing loudly; returns its wall time in seconds."""
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def scores_against_truth(labels_csv: Path, truth_csv: Path, head_sizes: list[int]) -> list[dict]:
    """Per head of ``head_sizes`` clusters: NMI, ARI, cluster accuracy (K = 10 only), the cluster sizes' range."""
    from sela_edu.training import read_path_labels_csv
    from sela_edu.evaluation.metrics import ari, cluster_accuracy, nmi

    with open(truth_csv, newline="") as handle:
        truth = {row["path"]: int(row["class"]) for row in csv.DictReader(handle)}
    paths, labels = read_path_labels_csv(labels_csv)
    y = np.array([truth[p] for p in paths])
    rows = []
    for row, k in zip(labels.numpy(), head_sizes):
        sizes = np.bincount(row, minlength=k)
        rows.append({"n": len(paths), "k": k, "nmi": nmi(y, row), "ari": ari(y, row),
                     "acc": cluster_accuracy(y, row) if k == 10 else float("nan"),
                     "sizes": f"{sizes.min()}-{sizes.max()}"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--clusters", default="10")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "sela-assign-bench"))
    args = parser.parse_args(argv)

    from sela_edu.training import read_path_labels_csv

    work = Path(args.work)
    train_folder, test_folder = work / f"fashion{args.train_images}", work / f"fashion-test{args.test_images}"
    train_truth = write_folder(train_folder, args.train_images)
    test_truth = write_folder(test_folder, args.test_images, split="test", stem="test", corrupt_in="part1")
    trained = work / f"label-{args.train_images}-{args.clusters.replace(',', '_')}-{args.epochs}"
    py = [sys.executable, "-m", "sela_edu"]
    label_cmd = py + ["label", str(train_folder), "--clusters", args.clusters, "--output", str(trained),
                      "--restart", "--quiet"]
    if args.epochs:
        label_cmd += ["--epochs", str(args.epochs)]
    label_seconds = run(label_cmd)
    summary = json.loads((trained / "summary.json").read_text())
    print(f"label: {summary['images']} images, epochs {summary.get('epochs')}, {label_seconds:.1f} s\n", flush=True)

    ks = summary["heads"]
    table = [("training images (label's own labels)", "label",
              scores_against_truth(trained / "labels.csv", train_truth, ks), label_seconds)]
    model = trained / "model.pt"
    again = work / "assign-train-equal"
    seconds = run(py + ["assign", str(train_folder), "--model", str(model), "--output", str(again), "--mode", "equal",
                        "--quiet"])
    table.append(("training images, assigned again", "equal", scores_against_truth(again / "labels.csv", train_truth, ks),
                  seconds))
    paths_a, labels_a = read_path_labels_csv(trained / "labels.csv")
    paths_b, labels_b = read_path_labels_csv(again / "labels.csv")
    same = paths_a == paths_b and bool((labels_a == labels_b).all())
    for mode in MODES:
        out = work / f"assign-test-{mode}"
        seconds = run(py + ["assign", str(test_folder), "--model", str(model), "--output", str(out), "--mode", mode,
                            "--quiet"])
        table.append(("held-out test images", mode, scores_against_truth(out / "labels.csv", test_truth, ks),
                      seconds))

    print(f"\n`assign --mode equal` on the training folder gives back label's labels exactly: {'yes' if same else 'NO'}")
    print("| images | labels | head | K | N | NMI | ARI | cluster accuracy | cluster sizes | wall time of the command |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for images, mode, rows, secs in table:
        for h, r in enumerate(rows):
            print(f"| {images} | {mode} | {h} | {r['k']} | {r['n']} | {r['nmi']:.3f} | {r['ari']:.3f} | {r['acc']:.3f} "
                  f"| {r['sizes']} | {secs:.1f} s |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
