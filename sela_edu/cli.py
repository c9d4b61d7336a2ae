"""The ``sela-edu`` command: run the notebook series, one notebook, the student edition, or training.

Examples::

    sela-edu run                                  # the series at the classroom profile -> results/run
    sela-edu run --profile smoke --output /tmp/s  # seconds per notebook; /tmp/s/index.html to read it in a browser
    sela-edu site results/run                     # (re)build a run's HTML pages and index.html
    sela-edu notebook 04_cifar_and_svhn -p profile paper -p dataset cifar100
    sela-edu student --output student/            # the release for students (nbgrader's format)
    sela-edu instructor --output instructor_edition/   # nbgrader source: solutions, hidden tests, answers
    sela-edu course init mycourse/                # an nbgrader course folder (config + assignment source)
    sela-edu presets                              # the named training settings, one line each
    sela-edu train --preset classroom -s epochs 3           # training without a notebook
    sela-edu imagenet-command --gpus 8 --arch resnet50      # prints the torchrun line for ImageNet
    sela-edu refresh 01 02                        # re-execute the notebooks committed with outputs

``python -m sela_edu ...`` is the same command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# light imports only, so that `sela-edu --help` answers at once: each command imports what it runs
from sela_edu import settings
from sela_edu.course.series.profiles import PROFILES

#: Notebooks committed with their outputs (compared by nbval in the tests).
STORED_OUTPUT_NOTEBOOKS = ("01_optimal_transport_toy", "02_self_labelling_objective")


def _parameters(pairs: Sequence[Sequence[str]] | None) -> dict:
    from sela_edu.course.series.runner import parse_value

    return {key: parse_value(value) for key, value in (pairs or [])}


def torchrun_command(*, gpus: int = 1, nodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
                     master_port: int = 29500, preset: str = "imagenet-paper", arch: str = "alexnet",
                     data_root: str | None = None, output: str = "results/imagenet",
                     overrides: dict | None = None) -> list[str]:
    """The torchrun command line (as a list of arguments) that trains SeLa on ImageNet on ``gpus`` GPUs
    per node and ``nodes`` nodes: the paper's 10 heads x 3000 clusters, lambda 25 (``preset``).

    Every process runs ``python -m sela_edu train`` with the same arguments; torchrun sets RANK,
    WORLD_SIZE and LOCAL_RANK, and the trainer's label step all-reduces the cluster sums across them.
    """
    for name, value in (("gpus", gpus), ("nodes", nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank must be in [0, {nodes}), got {node_rank}")
    cmd = ["torchrun", f"--nproc_per_node={gpus}"]
    if nodes > 1:
        cmd += [f"--nnodes={nodes}", f"--node_rank={node_rank}", f"--master_addr={master_addr}",
                f"--master_port={master_port}"]
    else:
        cmd += ["--standalone"]
    cmd += ["-m", "sela_edu", "train", "--preset", preset, "--dataset", "imagenet", "-s", "arch", arch,
            "--output", output]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    for key, value in (overrides or {}).items():
        cmd += ["-s", str(key), str(value)]
    return cmd


def _cmd_run(args) -> int:
    from sela_edu import course

    output = Path(args.output) if args.output else settings.results_dir() / "run"
    start = time.perf_counter()
    statuses = course.run_series(args.profile, output, only=args.only or None, parameters=_parameters(args.param),
                              data_root=args.data_root, figures_dir=args.figures, timeout=args.timeout)
    print()
    print(course.series_summary(output, statuses, figures_dir=args.figures))
    print(f"wall time of the run: {time.perf_counter() - start:.0f} s")
    return 1 if any(s.status == "failed" for s in statuses) else 0


def _cmd_site(args) -> int:
    from sela_edu.course.series.site import build_site

    index = build_site(args.folder)
    print(f"pages of the run: {index}")
    return 0


def _cmd_notebook(args) -> int:
    from sela_edu import course

    params = _parameters(args.param)
    src = course.notebook_path(args.name)
    output = Path(args.output) if args.output else settings.results_dir() / "notebooks"
    target = output / src.name if output.suffix != ".ipynb" else output
    results = target.parent
    if "output_dir" not in params:
        params["output_dir"] = str(results)
    start = time.perf_counter()
    course.execute_notebook(src, target, params, figures_dir=args.figures, results_dir=results,
                         data_root=args.data_root, timeout=args.timeout, progress=not args.quiet)
    print(f"executed {src.name} -> {target} ({time.perf_counter() - start:.0f} s)")
    records = course.load_results(results)
    if src.stem in records:
        print(course.summary_table({src.stem: records[src.stem]}))
    return 0


def _cmd_student(args) -> int:
    from sela_edu.course.teaching import editions

    paths = editions.build_student_edition(args.output, args.source, args.material)
    for p in paths:
        print(p)
    print(f"student edition: {len(paths)} notebooks in {args.output}")
    return 0


def _cmd_instructor(args) -> int:
    from sela_edu.course.teaching import editions

    paths = editions.build_instructor_edition(args.output, args.source, args.material)
    for p in paths:
        print(p)
    print(f"instructor edition (nbgrader source): {len(paths)} notebooks in {args.output}; for nbgrader copy them to "
          "source/<assignment>/ and run `nbgrader generate_assignment <assignment>` (`sela-edu course init DIR` "
          "makes the whole course folder, configured)")
    return 0


def _cmd_course_init(args) -> int:
    from sela_edu.course.teaching.nbgrader_course import init_course

    paths = init_course(args.directory, course_id=args.course_id, assignment=args.assignment, profile=args.profile,
                        timeout=args.timeout, source=args.source, material=args.material)
    for p in paths:
        print(p)
    print(f"nbgrader course in {args.directory}: `cd {args.directory} && nbgrader generate_assignment "
          f"{args.assignment}` (run nbgrader with this environment's bin/ on PATH: it calls alembic)")
    return 0


def _cmd_refresh(args) -> int:
    from sela_edu import course

    names = args.names or list(STORED_OUTPUT_NOTEBOOKS)
    # the committed figures/ are the stored notebooks' figures: refreshing them is the one run that writes there
    figures = Path(args.figures) if args.figures else settings.REPO_ROOT / "figures"
    for name in names:
        path = course.refresh_stored_outputs(name, figures_dir=figures, timeout=args.timeout)
        print(f"re-executed {path} in place")
    return 0


def _cmd_imagenet_command(args) -> int:
    cmd = torchrun_command(gpus=args.gpus, nodes=args.nodes, node_rank=args.node_rank, master_addr=args.master_addr,
                           master_port=args.master_port, arch=args.arch, data_root=args.data_root, output=args.output,
                           overrides=_parameters(args.set))
    print(shlex.join(cmd))
    return 0


def _per_head(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def train_summary(config, result, output: Path, world: int = 1) -> str:
    """What ``sela-edu train`` prints at the end: rounded figures with units, NMI per head when the data
    set has targets, and where the outputs went."""
    history = result.history
    last = history[-1] if history else {}
    t = result.timings or {}
    seconds, relabel = float(t.get("seconds", 0.0)), float(t.get("relabel_seconds", 0.0))
    n = len(result.labels[0]) if result.labels is not None and len(result.labels) else 0
    lines = [f"trained {config.method} on {config.dataset}: {n} images, {len(history)} epoch(s), {world} process(es), "
             f"{seconds:.1f} s ({relabel:.1f} s in label optimisation, {100 * relabel / max(seconds, 1e-9):.0f} %)"]
    ks = config.cluster_list()
    if last:
        parts = [f"loss {last['loss']:.3f}"] if isinstance(last.get("loss"), (int, float)) else []
        changes = [v for v in _per_head(last.get("label_change")) if v is not None]
        if changes:
            parts.append(f"labels changed by the last optimisation {100 * min(changes):.1f}-{100 * max(changes):.1f} %")
        spread = [v for v in _per_head(last.get("cluster_size_spread")) if v is not None]
        if spread:
            parts.append(f"cluster sizes spread (std / (N/K)) up to {max(spread):.2f}")
        if isinstance(last.get("images_per_second"), (int, float)):
            parts.append(f"{last['images_per_second']:.0f} images/s")
        if parts:
            lines.append(f"last epoch ({last.get('epoch', len(history))}): " + ", ".join(parts))
        nmis = _per_head(last.get("nmi"))
        if nmis:
            lines.append("NMI with the true classes, per head: "
                         + ", ".join(f"head {h} (K = {k}) {v:.3f}" for h, (k, v) in enumerate(zip(ks, nmis))))
    steps = [row for record in history for row in record.get("label_steps", [])]
    if steps:
        stuck = [r for r in steps if not r["converged"]]
        lines.append(f"label steps: {len(steps)} head solves, at most {max(r['passes'] for r in steps)} passes each, "
                     + ("all converged" if not stuck else
                        f"{len(stuck)} NOT converged (largest error {max(r['error'] for r in stuck):.1e})"))
    lines.append(f"labels -> {output / 'labels.csv'}; weights -> {output / 'model.pt'}"
                 + (f"; checkpoints -> {config.checkpoint_dir}" if config.checkpoint_dir else ""))
    return "\n".join(lines)


def _cmd_train(args) -> int:
    """Training without a notebook; under torchrun every rank runs this."""
    import torch

    from sela_edu.training import torchrun
    from sela_edu.data import load_dataset
    from sela_edu.training import export_labels_csv
    from sela_edu.training import config_from_preset, train

    overrides = _parameters(args.set)
    if args.dataset:
        overrides["dataset"] = args.dataset
    output = Path(args.output) if args.output else settings.results_dir() / "train"
    overrides.setdefault("checkpoint_dir", str(output / "checkpoints"))
    rank, world = torchrun.init_from_env()
    try:
        config = config_from_preset(args.preset, **overrides)
        data = load_dataset(config.dataset, "train", root=args.data_root)
        result = train(config, data, progress=(rank == 0))
        if rank == 0:
            output.mkdir(parents=True, exist_ok=True)
            labels = result.labels
            indices = result.indices if result.indices is not None else None
            export_labels_csv(output / "labels.csv", labels, indices)
            torch.save(result.model.state_dict(), output / "model.pt")
            print(train_summary(config, result, output, world))
    finally:
        torchrun.cleanup()
    return 0


def _cmd_presets(args) -> int:
    """The named training settings (sela_edu.training.presets), one line each."""
    from sela_edu.training import list_presets

    print("\n".join(list_presets()))
    return 0


def _cmd_ledger(args) -> int:
    """The ledger of the paper's claims (sela_edu.course.ledger.claims): run what the results folder lacks, print the table."""
    from sela_edu.course.ledger.claims import claims_for, format_table, ledger_rows
    from sela_edu.course.ledger.store import run_ledger, total_seconds

    claims = claims_for(args.only)   # unknown ids fail here, before any run
    recorded = settings.home() / "docs" / "ledger"
    out = args.out or (recorded if args.profile == "classroom" else settings.results_dir() / f"ledger-{args.profile}")
    results = run_ledger(args.profile, out, only=args.only)
    print(format_table(ledger_rows(results, claims)))
    print(f"{len(results)} runs in {out}, {total_seconds(results) / 60:.1f} min of machine time")
    return 0


def _cmd_label(args) -> int:
    """Self-label a folder of images (sela_edu.apps.label_folder)."""
    from sela_edu.apps.label_folder import label_folder
    from sela_edu.training import clusters_per_head

    # refused here, before any image is read, by the kit's one "K per head" rule
    ks = clusters_per_head(args.clusters, args.heads)
    result = label_folder(args.folder, args.output, clusters=ks, heads=len(ks), epochs=args.epochs,
                          backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size,
                          lam=args.lam, seed=args.seed, device=args.device, restart=args.restart,
                          per_cluster=args.per_cluster, progress=not args.quiet)
    out = result.output
    print(f"labelled {len(result.paths)} images in {result.seconds:.0f} s ({len(result.skipped)} skipped); "
          f"heads {[int(row.max()) + 1 for row in result.labels]}")
    print(f"labels -> {out / 'labels.csv'}; contact sheet -> {out / 'index.html'}; skipped -> {out / 'skipped.txt'}")
    return 0


def _cmd_assign(args) -> int:
    """Assign a folder's images to a trained model's clusters, without training (sela_edu.apps.assign)."""
    from sela_edu.apps.assign import assign_folder

    result = assign_folder(args.folder, args.model, args.output, mode=args.mode, lam=args.lam,
                           batch_size=args.batch_size, device=args.device, per_cluster=args.per_cluster,
                           progress=not args.quiet)
    out = result.output
    sizes = "; ".join(f"{sum(s > 0 for s in row)} of {len(row)} clusters used, sizes {min(row)}-{max(row)}"
                      for row in result.cluster_sizes)
    print(f"assigned {len(result.paths)} images in {result.seconds:.0f} s ({len(result.skipped)} skipped) to "
          f"{result.description}, mode {result.mode}; per head: {sizes}")
    print(f"labels -> {out / 'labels.csv'}; contact sheet -> {out / 'index.html'}; skipped -> {out / 'skipped.txt'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sela-edu", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_series_commands, _add_teaching_commands, _add_training_commands, _add_folder_commands):
        add(sub)
    return parser


def _notebook_options(p) -> None:
    """The options of every command that executes notebooks."""
    p.add_argument("--data-root", default=None, help="data folder (default $SELA_DATA_ROOT or data/)")
    p.add_argument("--figures", default=None, help="figures folder")
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell at most")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="notebook parameter (repeatable); values are parsed as JSON where possible")


def _add_series_commands(sub) -> None:
    """run, site, notebook: the notebook series."""
    p = sub.add_parser("run", help="run the notebook series with papermill and print the summary table")
    p.add_argument("--profile", default="classroom", choices=PROFILES)
    p.add_argument("--output", default=None, help="default: <results>/run ($SELA_RESULTS_DIR, or results/)")
    p.add_argument("--only", nargs="*", help="notebook names or numbers (default: the whole series)")
    _notebook_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("site", help="(re)build the HTML pages and index.html of a finished run folder")
    p.add_argument("folder", help="the run's --output folder (it holds notebooks/ and results/)")
    p.set_defaults(func=_cmd_site)

    p = sub.add_parser("notebook", help="run one notebook with any parameters")
    p.add_argument("name", help="e.g. 04_cifar_and_svhn, or just 04")
    p.add_argument("--output", default=None, help="folder (or .ipynb path) for the executed notebook")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _notebook_options(p)
    p.set_defaults(func=_cmd_notebook)


def _add_teaching_commands(sub) -> None:
    """student, instructor, course init, refresh: editions and the committed outputs."""
    p = sub.add_parser("student", help="build the student edition (nbgrader's release: stubs, no hidden tests)")
    p.add_argument("--output", default="student")
    p.add_argument("--source", default=None, help="folder of solution notebooks (default notebooks/)")
    p.add_argument("--material", default=None, help="instructor material (default instructor/ of the kit)")
    p.set_defaults(func=_cmd_student)

    p = sub.add_parser("instructor", help="build the instructor edition (nbgrader source notebooks)")
    p.add_argument("--output", default="instructor_edition")
    p.add_argument("--source", default=None, help="folder of solution notebooks (default notebooks/)")
    p.add_argument("--material", default=None, help="instructor material (default instructor/ of the kit)")
    p.set_defaults(func=_cmd_instructor)

    p = sub.add_parser("course", help="an nbgrader course for the kit's notebooks")
    course_sub = p.add_subparsers(dest="course_command", required=True)
    p = course_sub.add_parser("init", help="write an nbgrader course folder: nbgrader_config.py and the assignment's "
                                           "source notebooks (instructor edition)")
    p.add_argument("directory", help="the new course folder (must not exist, or be empty)")
    p.add_argument("--course-id", default="sela")
    p.add_argument("--assignment", default="sela", help="assignment name (default sela)")
    p.add_argument("--profile", default="smoke", choices=PROFILES,
                   help="the profile every autograde runs at (default smoke)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell during autograde (default: sized for smoke)")
    p.add_argument("--source", default=None, help="folder of solution notebooks (default notebooks/ of a clone)")
    p.add_argument("--material", default=None, help="instructor material (default instructor/ of a clone)")
    p.set_defaults(func=_cmd_course_init)

    p = sub.add_parser("refresh", help="re-execute the notebooks committed with outputs, in place")
    p.add_argument("names", nargs="*", help=f"default: {', '.join(STORED_OUTPUT_NOTEBOOKS)}")
    p.add_argument("--figures", default=None, help="folder for their figures (default: the committed figures/)")
    p.add_argument("--timeout", type=int, default=600)
    p.set_defaults(func=_cmd_refresh)


def _add_training_commands(sub) -> None:
    """imagenet-command, presets, ledger, train."""
    p = sub.add_parser("imagenet-command", help="print the torchrun command for ImageNet training")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29500)
    p.add_argument("--arch", default="alexnet", choices=["alexnet", "resnet50"])
    p.add_argument("--data-root", default=None)
    p.add_argument("--output", default="results/imagenet")
    p.add_argument("-s", "--set", nargs=2, action="append", metavar=("FIELD", "VALUE"),
                   help="TrainConfig override (repeatable)")
    p.set_defaults(func=_cmd_imagenet_command)

    p = sub.add_parser("presets", help="list the named training settings (for train --preset), one line each")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("ledger", help="the paper's claims tested: run what the results folder lacks, print the table")
    p.add_argument("--out", default=None, help="results folder (default: the recorded docs/ledger at classroom, "
                   "<results>/ledger-<profile> otherwise)")
    p.add_argument("--profile", default="classroom", choices=("smoke", "classroom", "gpu"))
    p.add_argument("--only", nargs="+", default=None, metavar="CLAIM", help='claims to run, e.g. 2 7 or 3a')
    p.set_defaults(func=_cmd_ledger)

    p = sub.add_parser("train", help="train from a preset (what torchrun launches)")
    p.add_argument("--preset", default="classroom")
    p.add_argument("--dataset", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--output", default=None, help="default: <results>/train ($SELA_RESULTS_DIR, or results/)")
    p.add_argument("-s", "--set", nargs=2, action="append", metavar=("FIELD", "VALUE"),
                   help="TrainConfig override, e.g. -s epochs 3 (repeatable)")
    p.set_defaults(func=_cmd_train)


def _add_folder_commands(sub) -> None:
    """label, assign: self-label a folder of images, or put it into a trained model's clusters."""
    p = sub.add_parser("label", help="self-label every image under a folder: labels.csv and a contact sheet")
    p.add_argument("folder", help="folder of images (any tree of JPEG/PNG files; no class folders needed)")
    p.add_argument("--clusters", required=True, help="K for every head, or one K per head: 10 or 10,20,50")
    p.add_argument("--heads", type=int, default=None, help="number of heads (default: one per K given)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: about 150,000 images seen; with --backbone, the "
                   "folder-backbone preset's 50)")
    p.add_argument("--backbone", default=None,
                   help="start from a pretrained backbone: a released model name (see sela_edu.apps.pretrained), "
                        "torchvision:resnet18 / torchvision:resnet50, or a checkpoint file")
    p.add_argument("--output", required=True, help="folder for labels.csv, index.html, skipped.txt, model.pt")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 32; a backbone's own, e.g. 224)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lam", type=float, default=10.0, help="Sinkhorn's lambda (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--per-cluster", type=int, default=24, help="thumbnails per cluster on the contact sheet")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming from OUTPUT/checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("assign", help="put the images of a folder into a trained model's clusters, without training")
    p.add_argument("folder", help="folder of images (read as `label` reads them)")
    p.add_argument("--model", required=True,
                   help="model.pt or heads.pt written by `sela-edu label`, a training checkpoint, or a released "
                        "model (name or file)")
    p.add_argument("--output", required=True, help="folder for labels.csv, index.html, skipped.txt, summary.json")
    p.add_argument("--mode", default="argmax", choices=["argmax", "equal", "prior"],
                   help="argmax: each head's best cluster; equal: the label step with equal-sized clusters; "
                        "prior: the label step with the trained clusters' sizes (default argmax)")
    p.add_argument("--lam", type=float, default=None, help="label step's lambda (default: the model's own, else 10)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--per-cluster", type=int, default=24, help="thumbnails per cluster on the contact sheet")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_assign)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"sela-edu: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
