"""Record a `sela-edu label` run on a folder of Fashion-MNIST images written as PNG files.

Writes N images (default 2,000, drawn with a fixed seed from the training set) as PNGs in a tree without
class folders (three sub-folders by position, plus one non-image file and one corrupt PNG, which must be
skipped), keeps their hidden classes in a CSV *outside* the folder, runs the `sela-edu label` command,
and prints its wall time and the NMI / ARI / cluster accuracy of every head's labels against the hidden
classes (`sela_edu.evaluation.metrics`).

    SELA_DATA_ROOT=/path/to/data python benchmarks/bench_label_folder.py --images 2000 --clusters 10
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


def write_folder(folder: Path, n: int, seed: int = 0, *, split: str = "train", stem: str = "img",
                 corrupt_in: str = "part0") -> Path:
    """n Fashion-MNIST images of ``split`` as PNGs in three sub-folders, plus a non-image file and a corrupt
    PNG (in ``corrupt_in``); returns the CSV of their hidden classes."""
    from PIL import Image

    from sela_edu.data import load_dataset

    truth = folder.with_name(folder.name + "_hidden_classes.csv")
    if truth.is_file() and folder.is_dir():
        return truth
    data = load_dataset("fashion-mnist", split)
    idx = np.random.default_rng(seed).choice(len(data), n, replace=False)
    folder.mkdir(parents=True, exist_ok=True)
    with open(truth, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class"])
        for j, i in enumerate(idx):
            rel = f"part{j % 3}/{stem}{j:05d}.png"
            (folder / rel).parent.mkdir(exist_ok=True)
            Image.fromarray(data.images[i, 0].numpy()).save(folder / rel)
            writer.writerow([rel, int(data.targets[i])])
    (folder / "README.txt").write_text("not an image\n")
    (folder / corrupt_in / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return truth


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--clusters", default="10")
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "sela-label-bench"))
    parser.add_argument("--extra", default="", help="more arguments for sela-edu label")
    args = parser.parse_args(argv)

    from sela_edu.training import read_path_labels_csv
    from sela_edu.evaluation.metrics import ari, cluster_accuracy, nmi

    work = Path(args.work)
    folder = work / f"fashion{args.images}"
    truth_csv = write_folder(folder, args.images)
    out = work / f"out-{args.images}-{args.clusters.replace(',', '_')}-{args.heads}-{args.epochs}"
    cmd = [sys.executable, "-m", "sela_edu", "label", str(folder), "--clusters", args.clusters,
           "--output", str(out), "--restart"]
    if args.heads:
        cmd += ["--heads", str(args.heads)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    cmd += shlex.split(args.extra)
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0

    with open(truth_csv, newline="") as handle:
        truth = {row["path"]: int(row["class"]) for row in csv.DictReader(handle)}
    paths, labels = read_path_labels_csv(out / "labels.csv")
    y = np.array([truth[p] for p in paths])
    skipped = (out / "skipped.txt").read_text().splitlines()
    summary = json.loads((out / "summary.json").read_text())
    print(f"\n{len(paths)} images labelled, {len(skipped)} skipped ({', '.join(s.split(chr(9))[0] for s in skipped)}); "
          f"wall time of the command {seconds:.1f} s (epochs {summary.get('epochs')}, batch {summary.get('batch_size')}, "
          f"{summary.get('relabels')} label optimisations)")
    print("| head | K | NMI | ARI | cluster accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for h, row in enumerate(labels.numpy()):
        k = int(row.max()) + 1
        acc = cluster_accuracy(y, row) if k == 10 else float("nan")
        print(f"| {h} | {k} | {nmi(y, row):.3f} | {ari(y, row):.3f} | {acc:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
