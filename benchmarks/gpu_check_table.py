"""The GPU check's closing table: every figure its steps measured, beside its target (issue 26), each marked
met, missed or not measured. Reads what the steps wrote into the check's folder (``steps.tsv`` from
benchmarks/gpu_check.sh, and each step's JSON); run by the check itself as its last step::

    python benchmarks/gpu_check_table.py results/gpu_check [--dry-run]

In a dry run (toy sizes on the CPU) every figure is printed with "(toy)" and marked "not measured": a dry
run proves the script, never a target.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MET, MISSED, NOT_MEASURED, INFO = "met", "MISSED", "not measured", "-"
CHECK_SECONDS = 480          # at most 8 minutes on one H100 or H200
TRAIN_TARGET = 25_000        # cifar-paper images/s on one H200, relabelling included
SCHEDULE_EPOCHS = 400


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(folder: Path) -> list[dict]:
    rows = []
    path = folder / "steps.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 5:
                rows.append(dict(zip(("id", "name", "status", "seconds", "limit"), parts)))
    return rows


def table_rows(folder: Path, dry: bool) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) rows."""
    steps = {s["id"]: s for s in _steps(folder)}
    rows: list[tuple[str, str, str, str]] = []

    def missing(step_id: str) -> str:
        s = steps.get(step_id)
        why = "step not run" if s is None else f"step {s['name']!r} {s['status']}"
        return f"{NOT_MEASURED} ({why})"

    def judge(ok: bool | None) -> str:
        if dry:
            return f"{NOT_MEASURED} (dry run)"
        if ok is None:
            return INFO
        return MET if ok else MISSED

    def fig(text: str) -> str:
        return f"{text} (toy)" if dry else text

    # (a) the CUDA tests
    s = steps.get("a")
    rows.append(("CUDA tests (tests/test_cuda.py)", s["status"] if s else "not run", "pass",
                 judge(s is not None and s["status"] == "ok") if s else missing("a")))
    # (b) the floor
    bw = _load(folder, "bandwidth.json")
    gbps = bw["gbps"] if bw else None
    rows.append(("device bandwidth (device-to-device copy)", fig(f"{gbps:.0f} GB/s") if bw else "-",
                 "the floor of a pass", judge(None) if bw else missing("b")))
    # (c) the label step at 1.28M x 3000
    ls = _load(folder, "label_step.json")
    size = f"{ls['n']} x {ls['k']}" if ls else "1.28M x 3000"
    limits = {"bfloat16": 0.25, "float32": 0.5}
    agree_targets = {"float32": 0.999, "bfloat16": 0.99}
    for storage in ("bfloat16", "float32"):
        row = (ls or {}).get("storages", {}).get(storage)
        label = f"label step {size}, {storage}: s per head"
        if row is None:
            rows.append((label, "-", f"<= {limits[storage]} s", missing("c")))
            continue
        rows.append((label, fig(f"{row['seconds']:.3f} s ({row['passes']} passes)"), f"<= {limits[storage]} s",
                     judge(row["seconds"] <= limits[storage])))
        floor = f"{row['read_p_ms']:.2f} ms" if row.get("read_p_ms") else "?"
        rows.append((f"  {storage}: ms per pass / one read of P", fig(f"{row['ms_per_pass']:.2f} ms"),
                     f"floor {floor}", judge(None)))
    sto = (ls or {}).get("storages", {})
    if "bfloat16" in sto and "float32" in sto:
        rows.append(("label step: bfloat16 not slower than float32",
                     fig(f"{sto['bfloat16']['seconds']:.3f} vs {sto['float32']['seconds']:.3f} s"), "bf16 <= fp32",
                     judge(sto["bfloat16"]["seconds"] <= sto["float32"]["seconds"])))
    else:
        rows.append(("label step: bfloat16 not slower than float32", "-", "bf16 <= fp32", missing("c")))
    for storage in ("float32", "bfloat16"):
        row = sto.get(storage)
        label = f"labels equal to the CPU path's, {storage}"
        target = f">= {100 * agree_targets[storage]:g} %"
        if row is None or "agreement" not in row:
            rows.append((label, "-", target, missing("c")))
            continue
        rows.append((label, fig(f"{100 * row['agreement']:.3f} % (first {ls['agree_rows']} rows)"), target,
                     judge(row["agreement"] >= agree_targets[storage])))
    # (d) the official GPU loop beside the kit
    off = _load(folder, "official.json")
    if off:
        o = off["official"]
        state = ("converged" if o["converged"] else f"budget {off['budget']:g} s hit at error {o['error']:.3g}")
        rows.append(("official GPU loop (float64, stop at 0.1)",
                     fig(f"{o['seconds']:.1f} s, {o['iterations']} it., {state}"), "runs, error printed",
                     judge(None)))
        rows.append(("  kit on the same scores (float32), official / kit time", fig(
                     f"{off['kit']['seconds']:.2f} s, {'' if o['converged'] else '>= '}{off['speedup']:.1f}x"),
                     "-", judge(None)))
        rows.append(("  labels equal, kit vs official", fig(f"{100 * off['agreement']:.3f} %"), "-", judge(None)))
    else:
        rows.append(("official GPU loop beside the kit", "-", "runs, error printed", missing("d")))
    # (e) training
    for name, step_id, label in (("bench_training.json", "e1", "cifar-paper training (float16 autocast)"),
                                 ("bench_training_bf16.json", "e2", "cifar-paper, bfloat16 + channels-last")):
        tr = _load(folder, name)
        if tr is None:
            rows.append((f"{label}: images/s with relabelling", "-", f">= {TRAIN_TARGET:,}", missing(step_id)))
            continue
        ips = tr["sela_images_per_second_with_relabel"]
        rows.append((f"{label}: images/s with relabelling", fig(f"{ips:,.0f}"), f">= {TRAIN_TARGET:,}",
                     judge(ips >= TRAIN_TARGET)))
        if "ceiling_images_per_second" in tr:
            rows.append(("  ceiling (one resident batch), measured / ceiling",
                         fig(f"{tr['ceiling_images_per_second']:,.0f} images/s, {tr['ratio_to_ceiling_with_relabel']:.2f}"),
                         "-", judge(None)))
        minutes = SCHEDULE_EPOCHS * tr.get("images", 50_000) / ips / 60
        rows.append(("  the 400-epoch schedule at that rate", fig(f"{minutes:.1f} min"), "<= 15 min",
                     judge(minutes <= 15)))
    cl = _load(folder, "classroom.json")
    label = "classroom preset, 20 epochs"
    if cl is None:
        rows.append((label, "-", "<= 10 s", missing("e3")))
    else:
        done = (f"{cl['sela_wall_seconds']:.1f} s" if cl["schedule_complete"] else
                f"{cl['epochs']} of {cl['schedule_epochs']} epochs in {cl['sela_wall_seconds']:.1f} s, projected "
                f"{cl['projected_schedule_seconds']:.0f} s")
        rows.append((label, fig(done), "<= 10 s", judge(cl["projected_schedule_seconds"] <= 10)))
    # the check itself
    if steps:
        total = sum(float(s["seconds"]) for s in steps.values())
        inside = all(s["status"] == "ok" for s in steps.values() if s["id"] != "f")
        rows.append(("the whole check, every step inside its limit",
                     fig(f"{total:.0f} s, {'all' if inside else 'NOT all'} steps ok"), f"<= {CHECK_SECONDS} s",
                     judge(total <= CHECK_SECONDS and inside)))
    return rows


def format_table(rows) -> str:
    header = ("figure", "measured", "target", "verdict")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = lambda r: " | ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    rows = table_rows(Path(args.folder), args.dry_run)
    print("CLOSING TABLE" + (" (dry run: toy sizes on the CPU; no GPU figure is measured)" if args.dry_run else ""))
    print(format_table(rows))
    counts = {v: sum(r[3].startswith(v) for r in rows) for v in (MET, MISSED, NOT_MEASURED)}
    print(f"targets: {counts[MET]} met, {counts[MISSED]} missed, {counts[NOT_MEASURED]} not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
