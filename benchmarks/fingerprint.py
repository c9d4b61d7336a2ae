"""Fingerprints of what the kit computes: SHA-256 of the label step's labels on the benchmark scores and of
six short trainings (labels and weights). Run it before and after a change that should not change the
arithmetic; equal lines mean bit-identical results on this machine (not across machines: the last bit of
a float depends on the processor and its threads).

    python benchmarks/fingerprint.py > before.txt   # ... change ...
    python benchmarks/fingerprint.py | diff before.txt -
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sela_edu import config_from_preset, load_dataset, self_label, train  # noqa: E402
from sela_edu.labelling import synthetic_scores  # noqa: E402

#: six short trainings on the digits, one for each path through the trainer
TRAININGS = {
    "sela": {},
    "sela-augmented-round-robin": dict(score_mode="augmented", relabel_heads="round-robin", nopts=3),
    "sela-rotation": dict(rotation=True),
    "sela-cosine-heads": dict(head_temperature=0.1),
    "kmeans": dict(method="kmeans"),
    "supervised": dict(method="supervised"),
}


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(torch.as_tensor(t).detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()[:16]


def label_steps():
    scores = {}
    for path in sorted((ROOT / "benchmarks" / "scores").glob("*.npz")):
        recorded = np.load(path)
        scores.update({f"recorded {path.stem} {k}": torch.from_numpy(recorded[k]).float()
                       for k in recorded.files if k.startswith("k")})
    scores["synthetic 20000 x 500"] = synthetic_scores(20_000, 500, seed=0)
    for name, s in scores.items():
        for dtype in (torch.float32, torch.bfloat16):
            result = self_label(s, lam=10.0, storage_dtype=dtype)
            yield f"label step, {name}, {str(dtype)[6:]}", digest(result.labels)


def trainings():
    data = load_dataset("digits")
    for name, overrides in TRAININGS.items():
        config = config_from_preset("smoke", device="cpu", **overrides)
        result = train(config, data, progress=False)
        weights = [p for p in result.model.state_dict().values() if p.is_floating_point()]
        yield f"training {name}", f"labels {digest(result.labels)} weights {digest(*weights)}"


if __name__ == "__main__":
    torch.set_num_threads(1)
    for line in (*label_steps(), *trainings()):
        print(*line, sep=": ", flush=True)
