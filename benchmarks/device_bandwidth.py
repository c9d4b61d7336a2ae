"""The device's own memory bandwidth: a device-to-device copy of about 4 GB, in GB/s (bytes read plus bytes
written, per second), the floor the GPU check sets beside every pass over P.

    python benchmarks/device_bandwidth.py --device cuda --json results/gpu_check/bandwidth.json
    python benchmarks/device_bandwidth.py --device cpu --gb 0.2        # the dry run: the CPU's, at a toy size

A pass of the label step reads P once, so one read of P takes ``bytes(P) / bandwidth`` at best (a copy moves
``2 x size`` bytes in the time printed; the figure counts both, as GPU vendors' copy figures do).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def copy_bandwidth(device: str = "cuda", gb: float = 4.0, repeats: int = 10) -> dict:
    """Best of ``repeats`` copies of a ``gb`` GB buffer into another on ``device``: GB/s moved (read + write)."""
    dev = torch.device(device)
    n = int(gb * 1e9) // 4
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dst.copy_(src)                     # warm-up: the first touch of dst's pages, the copy kernel's launch
    sync()
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            stop.record()
            stop.synchronize()
            seconds = start.elapsed_time(stop) / 1e3
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            seconds = time.perf_counter() - t0
        best = min(best, seconds)
    moved = 2 * src.numel() * src.element_size()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"device": name, "bytes_copied": src.numel() * src.element_size(), "seconds": best,
            "gbps": moved / best / 1e9, "repeats": repeats}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--gb", type=float, default=4.0, help="size of the copied buffer in GB (default 4)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    out = copy_bandwidth(args.device, args.gb, args.repeats)
    print(f"{out['device']}: device-to-device copy of {out['bytes_copied'] / 1e9:.2f} GB in {out['seconds'] * 1e3:.2f} ms "
          f"(best of {out['repeats']}): {out['gbps']:.1f} GB/s read + write")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
