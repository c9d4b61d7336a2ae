"""Record real label-step inputs: the head scores of the kit's own network at stages of training.

    SELA_DATA_ROOT=/path/to/data .venv/bin/python benchmarks/record_scores.py
    .venv/bin/python benchmarks/record_scores.py --epochs 8 --stages 1,3,8 --rows 10000   # a longer run

Trains the ``classroom`` preset (small CNN, heads of 10/20/50/100 clusters, lambda 10) on Fashion-MNIST
and, after each epoch listed in ``--stages``, scores every training image as the label step does
(un-augmented, network in eval mode). A fixed random sample of ``--rows`` images is kept, in float16, one
file per stage: ``benchmarks/scores/fmnist_classroom_e{epoch}.npz`` with arrays ``k10``, ``k20``, ... (rows x
K logits), ``rows`` (the images' indices) and ``epoch``, ``lam``. The solver's tests and
``bench_sinkhorn.py`` read them; :func:`sela_edu.labelling.synthetic_scores` is calibrated on them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "scores"


def head_scores(config, data, checkpoint: Path) -> list[np.ndarray]:
    """All heads' logits for every image of ``data`` from the model saved in ``checkpoint``."""
    from sela_edu.training import checkpoint as ckpt
    from sela_edu.data import make_loader
    from sela_edu.training import build_for_config

    model = build_for_config(config, data)
    model.load_state_dict(ckpt.load_checkpoint(checkpoint)["model"])
    model.eval()
    outs = None
    with torch.no_grad():
        for x, _, _ in make_loader(data, 512, train=False, shuffle=False):  # un-augmented, in data order
            heads = model(x)
            outs = [[] for _ in heads] if outs is None else outs
            for acc, h in zip(outs, heads):
                acc.append(h.float())
    return [torch.cat(o).numpy() for o in outs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stages", default="1,3", help="epochs after which to record")
    parser.add_argument("--rows", type=int, default=10000, help="images kept per stage (a fixed random sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    from sela_edu.data import load_dataset
    from sela_edu.training import config_from_preset, train

    stages = sorted({int(s) for s in args.stages.split(",")})
    data = load_dataset("fashion-mnist")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = np.sort(np.random.default_rng(args.seed).choice(len(data), size=min(args.rows, len(data)), replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_preset("classroom", epochs=args.epochs, seed=args.seed, checkpoint_dir=tmp, device="cpu")
        t0 = time.perf_counter()

        def record(rec):
            epoch = rec["epoch"]
            print(json.dumps({k: rec.get(k) for k in ("epoch", "loss", "nmi", "seconds")}, default=str), flush=True)
            if epoch not in stages:
                return
            scores = head_scores(config, data, Path(tmp) / "last.pt")
            arrays = {f"k{s.shape[1]}": s[rows].astype(np.float16) for s in scores}
            path = out / f"fmnist_classroom_e{epoch}.npz"
            np.savez_compressed(path, rows=rows.astype(np.int32), epoch=epoch, lam=config.lam, **arrays)
            print(f"epoch {epoch}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB) after "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)

        train(config, data, callback=record, progress=False)


if __name__ == "__main__":
    main()
