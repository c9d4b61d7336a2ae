"""How much of the labels does each label optimisation change, per score mode, with the network learning
and with it held (almost) still?

With the learning rate at 1e-4 the network hardly moves between optimisations, so the labels should hardly
change; what changes them then is what the scores are computed on: the plain images in eval mode
("plain"), augmented views with BatchNorm in train mode ("augmented"), or each image's outputs from its
last training batch ("training"). The smoke preset on all 1,797 digits, 6 epochs, 12 optimisations.

    python benchmarks/score_mode_churn.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sela_edu.data import load_dataset  # noqa: E402
from sela_edu.evaluation.metrics import nmi  # noqa: E402
from sela_edu.training import config_from_preset, train  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.05, 1e-4])
    parser.add_argument("--modes", nargs="+", default=["plain", "augmented", "training"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    print(f"{'lr':>7s} {'mode':10s} {'seed':>4s} {'labels changed by the last optimisation of epochs 2-6 (head 0)':55s} "
          f"{'NMI head 0':>10s}")
    for lr in args.lrs:
        for mode in args.modes:
            late = []
            for seed in args.seeds:
                config = config_from_preset("smoke", device="cpu", epochs=6, nopts=12, score_mode=mode, lr=lr,
                                            max_images=None, seed=seed)
                result = train(config, data, progress=False)
                changes = [r["label_change"][0] for r in result.history[1:] if r.get("label_change")]
                late.extend(changes)
                print(f"{lr:7.0e} {mode:10s} {seed:4d} {' '.join(f'{c:.2f}' for c in changes):55s} "
                      f"{nmi(data.targets, result.labels[0]):10.3f}")
            print(f"{lr:7.0e} {mode:10s} mean {statistics.mean(late):.2f} of the labels changed per optimisation (epochs 2-6)")


if __name__ == "__main__":
    main()
