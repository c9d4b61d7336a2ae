"""What the notebooks need around the science: profiles, results, clean stops, papermill, the student edition.

* :data:`NOTEBOOKS` lists the series in order, with what each one needs to run.
* :func:`resolve_config` turns a notebook's ``profile`` parameter (``"smoke"``, ``"classroom"``,
  ``"paper"``) plus single overrides into a trainer :class:`~sela_edu.trainer.TrainConfig`.
* :func:`record_result` writes a notebook's measured numbers as a small JSON file; :func:`summary_table`
  prints them beside the paper's (:data:`PAPER_RESULTS`).
* :func:`stop_here` ends a notebook cleanly when its data is absent: the rest of the cells still "run"
  (so papermill reports success) but do nothing.
* :func:`execute_notebook` / :func:`run_series` run notebooks with papermill; :func:`build_student_edition`
  removes the solution cells.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import settings

NOTEBOOKS_DIR = settings.REPO_ROOT / "notebooks"
PROFILES = ("smoke", "classroom", "paper")

#: env var that tells notebooks to draw static figures instead of widgets (set by the runners here)
STATIC_ENV = "SELA_STATIC_FIGURES"


@dataclass(frozen=True)
class NotebookInfo:
    """One notebook of the series. ``needs(profile, parameters)`` names the data set that must be on
    disk for the notebook to be worth running (``None``: it always runs)."""

    name: str
    title: str
    needs: Any = None

    def required_dataset(self, profile: str, parameters: Mapping[str, Any]) -> str | None:
        return self.needs(profile, dict(parameters)) if callable(self.needs) else self.needs


NOTEBOOKS: tuple[NotebookInfo, ...] = (
    NotebookInfo("01_optimal_transport_toy", "Optimal transport with warehouses and shops"),
    NotebookInfo("02_self_labelling_objective", "Why self-labelling needs equipartition"),
    NotebookInfo("03_self_labelling_on_cpu", "The whole method on a CPU"),
    NotebookInfo("04_cifar_and_svhn", "CIFAR-10/100 and SVHN at the paper's settings",
                 needs=lambda profile, p: p.get("dataset") or "cifar10"),
    NotebookInfo("05_imbalance", "Imbalanced data",
                 needs=lambda profile, p: (p.get("dataset") or "cifar10") if profile == "paper" else None),
    NotebookInfo("06_label_transfer", "Label transfer"),
    NotebookInfo("07_imagenet_scale", "ImageNet scale",
                 needs=lambda profile, p: None if profile == "smoke" else "imagenet"),
)

#: The paper's figures (ICLR 2020 and its official code), keyed as the notebooks record their own.
PAPER_RESULTS: dict[str, tuple[float, str]] = {
    "cifar10_knn": (77.6, "CIFAR-10, AlexNet, weighted kNN (%)"),
    "cifar10_linear": (83.4, "CIFAR-10, AlexNet, linear probe (%)"),
    "svhn_supervised": (96.1, "SVHN, supervised (%)"),
    "svhn_and": (93.7, "SVHN, previous best AND (%)"),
    "imagenet_resnet50_linear": (61.5, "ImageNet, ResNet-50 10x3k, linear top-1 (%)"),
    "imagenet_resnet50_nmi": (54.2, "ImageNet val, ResNet-50 10x3k, NMI (%)"),
    "imagenet_alexnet_linear_1k": (42.1, "ImageNet, AlexNet 1k clusters, linear (%)"),
    "imagenet_alexnet_linear_10k": (43.8, "ImageNet, AlexNet 10k clusters, linear (%)"),
    "label_transfer_alexnet_from_resnet50": (48.4, "AlexNet trained on ResNet-50 SeLa labels (%)"),
    "label_transfer_alexnet_self": (46.5, "AlexNet trained by SeLa itself (%)"),
    "imagenet_sinkhorn_seconds": (120.0, "Sinkhorn at N=1.28M, K=3000 on GPU (s, 'within 2 minutes')"),
}


# --------------------------------------------------------------------------------------------------
# Parameters and profiles


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    return profile


def preset_for(profile: str, paper_preset: str = "cifar-paper") -> str:
    """The trainer preset behind a profile: smoke -> "smoke", classroom -> "classroom",
    paper -> ``paper_preset`` ("cifar-paper" or "imagenet-paper")."""
    check_profile(profile)
    return paper_preset if profile == "paper" else profile


def resolve_config(profile: str, *, paper_preset: str = "cifar-paper", **overrides):
    """``trainer.config_from_preset(preset_for(profile), **overrides)``, ignoring overrides that are
    ``None`` (a notebook parameter left at its default)."""
    from .trainer import config_from_preset

    given = {k: v for k, v in overrides.items() if v is not None}
    return config_from_preset(preset_for(profile, paper_preset), **given)


def pick(profile: str, *, smoke, classroom, paper=None):
    """The value for this profile (``paper`` defaults to ``classroom``): keeps a notebook's
    per-profile sizes on one line."""
    check_profile(profile)
    return {"smoke": smoke, "classroom": classroom, "paper": classroom if paper is None else paper}[profile]


def output_folder(output_dir: str | os.PathLike | None = None) -> Path:
    """The folder a notebook writes results into: ``output_dir`` if given, else ``settings.results_dir()``."""
    path = Path(output_dir).expanduser() if output_dir else settings.results_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_folder(config, output_dir: str | os.PathLike | None = None, tag: str = "") -> Path:
    """A checkpoint folder named after what decides a run's result (method, data set, preset sizes), so
    that notebooks sharing an output folder share runs: 06 reuses the SeLa run of 03, and re-running a
    notebook resumes instead of recomputing."""
    ks = "-".join(str(k) for k in config.cluster_list())
    name = (f"{tag + '_' if tag else ''}{config.method}_{config.dataset}_{config.arch}_h{config.num_heads}_k{ks}"
            f"_lam{config.lam:g}_e{config.epochs}_n{config.max_images or 'all'}_s{config.seed}")
    return output_folder(output_dir) / "checkpoints" / re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def frozen_evaluation(model, train_data, test_data, *, knn_k: int = 200, pca_dim: int | None = None,
                      linear: bool = True, batch_size: int = 512, device=None) -> dict[str, float]:
    """kNN accuracy (weighted vote, sigma 0.1) and linear-probe accuracy, in %, of ``model``'s frozen
    features: train split as memory bank / probe training set, test split scored. ``pca_dim`` applies
    the paper's CIFAR protocol (PCA to 128 before kNN)."""
    from . import evaluation
    from .data import make_loader

    dev = device if device is not None else next(model.parameters()).device
    train_feats = evaluation.extract_features(model, make_loader(train_data, batch_size, train=False, device=dev))
    test_feats = evaluation.extract_features(model, make_loader(test_data, batch_size, train=False, device=dev))
    knn_train, knn_test = (evaluation.pca_project(train_feats, test_feats, dim=pca_dim) if pca_dim
                           else (train_feats, test_feats))
    k = min(knn_k, len(train_data))
    out = {"knn": 100.0 * evaluation.knn_accuracy(knn_train, train_data.targets, knn_test, test_data.targets, k=k)}
    if linear:
        out["linear"] = 100.0 * evaluation.linear_probe(train_feats, train_data.targets, test_feats,
                                                        test_data.targets).accuracy
    return out


# --------------------------------------------------------------------------------------------------
# Data availability and clean stops


def dataset_available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether ``load_dataset(name, root=root)`` would find its files (a cheap look at the paths that
    data.py reads; it does not open them)."""
    base = Path(root).expanduser() if root else settings.data_root()
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    paths = {
        "digits": None,  # ships with scikit-learn
        "fashion-mnist": base / "FashionMNIST" / "raw" / "train-images-idx3-ubyte",
        "cifar10": base / "cifar-10-batches-py" / "data_batch_1",
        "cifar100": base / "cifar-100-python" / "train",
        "svhn": base / "svhn" / "train_32x32.mat",
        "imagenet": base / "imagenet" / "train",
    }
    if key not in paths:
        raise ValueError(f"unknown data set {name!r}; known here: {', '.join(paths)}")
    path = paths[key]
    if path is None:
        return True
    if key == "fashion-mnist":
        return path.exists() or path.with_name(path.name + ".gz").exists()
    return path.exists()


def how_to_get(name: str) -> str:
    """One paragraph on fetching a data set by hand."""
    if name == "imagenet":
        return ("ImageNet (ILSVRC-2012) cannot be downloaded automatically: get it from https://image-net.org "
                "and arrange <data_root>/imagenet/train/<class>/<images> and .../val/<class>/<images>.")
    return (f"On a machine with internet run `python -c \"from sela_edu.data import load_dataset; "
            f"load_dataset('{name}', download=True)\"` (files land under $SELA_DATA_ROOT, default data/), "
            f"or copy the folder there.")


def cpu_dataset(profile: str, dataset: str | None = None, data_root: str | os.PathLike | None = None) -> str:
    """The data set of the CPU notebooks (03, 05, 06): ``dataset`` when given; else digits for the smoke
    profile, and Fashion-MNIST otherwise when its files are present, digits when they are not."""
    check_profile(profile)
    if dataset:
        return dataset
    if profile != "smoke" and dataset_available("fashion-mnist", data_root):
        return "fashion-mnist"
    if profile != "smoke":
        print("Fashion-MNIST is not under the data root, so this run uses digits. " + how_to_get("fashion-mnist"))
    return "digits"


def arch_for(dataset: str, arch: str | None = None) -> str | None:
    """``arch`` if given; the small CNN for the tiny grey data sets (digits' 8 px is below AlexNet's
    minimum); else None (the preset decides)."""
    if arch:
        return arch
    return "smallcnn" if dataset in ("digits", "fashion-mnist") else None


class NotebookStopped(RuntimeError):
    """Raised by :func:`stop_here` outside IPython, where there are no later cells to neutralise."""


_STOP_STATE: dict[str, Any] = {"transformer": None, "message": ""}


def stop_here(message: str) -> None:
    """End the notebook cleanly: print ``message``; every later cell then runs as a no-op that only
    prints a one-line note (papermill and "Run all" finish with success).

    It works by adding an IPython input transformer; :func:`resume` removes it (or restart the kernel).
    Outside IPython it raises :class:`NotebookStopped`.
    """
    print(f"STOPPED: {message}")
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the kit
        get_ipython = lambda: None  # noqa: E731
    ip = get_ipython()
    if ip is None:
        raise NotebookStopped(message)
    resume()

    def _skip(lines: list[str]) -> list[str]:
        return ["print('(skipped: the notebook stopped above)')\n"]

    ip.input_transformers_cleanup.append(_skip)
    _STOP_STATE.update(transformer=_skip, message=message)


def resume() -> None:
    """Undo :func:`stop_here` (e.g. after downloading the data) so later cells run again."""
    transformer = _STOP_STATE.get("transformer")
    if transformer is None:
        return
    with contextlib.suppress(Exception):
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None and transformer in ip.input_transformers_cleanup:
            ip.input_transformers_cleanup.remove(transformer)
    _STOP_STATE.update(transformer=None, message="")


def widgets_enabled() -> bool:
    """Whether to offer interactive widgets: inside an IPython kernel, with ipywidgets installed,
    and not under one of the kit's batch runners (which set ``$SELA_STATIC_FIGURES``)."""
    if os.environ.get(STATIC_ENV):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


# --------------------------------------------------------------------------------------------------
# Results


def _plain(value):
    """Numbers from numpy/torch as plain floats/ints; NaN becomes None (JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise ValueError(f"record_result takes numbers, strings, lists and dicts; got {type(value).__name__}")


def record_result(name: str, values: Mapping[str, Any], *, folder: str | os.PathLike | None = None,
                  profile: str | None = None, notes: str | None = None) -> Path:
    """Write a notebook's measured numbers to ``<folder>/results/<name>.json`` and return the path.

    ``values`` maps a key (use the keys of :data:`PAPER_RESULTS` where the paper reports the same
    quantity) to a number or string. ``folder`` defaults to ``settings.results_dir()``.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"result name must be a plain file stem, got {name!r}")
    if not isinstance(values, Mapping) or not values:
        raise ValueError("record_result needs a non-empty dict of measured values")
    out = output_folder(folder) / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "profile": profile,
        "values": {str(k): _plain(v) for k, v in values.items()},
        "notes": notes,
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_results(folder: str | os.PathLike) -> dict[str, dict]:
    """All records under ``<folder>/results/`` by name (unreadable files are reported, not fatal)."""
    out: dict[str, dict] = {}
    for path in sorted((Path(folder) / "results").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out[path.stem] = {"name": path.stem, "values": {}, "notes": f"unreadable: {exc}"}
            continue
        out[record.get("name", path.stem)] = record
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def summary_table(records: Mapping[str, dict], statuses: Mapping[str, str] | None = None) -> str:
    """A plain-text table: notebook, status, measure, measured value and the paper's value where the
    paper reports the same key (see :data:`PAPER_RESULTS`)."""
    rows = [("notebook", "status", "measure", "measured", "paper")]
    names = list(statuses or {})
    names += [n for n in records if n not in names]
    for name in names:
        status = (statuses or {}).get(name, "ok")
        if len(status) > 48:  # the full message is printed with the run; keep the table readable
            status = status[:45] + "..."
        values = records.get(name, {}).get("values", {})
        if not values:
            rows.append((name, status, "", "", ""))
            continue
        for i, (key, value) in enumerate(values.items()):
            paper = PAPER_RESULTS.get(key, (None, ""))[0]
            rows.append((name if i == 0 else "", status if i == 0 else "", key, _fmt(value), _fmt(paper)))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Running notebooks


def notebook_path(name: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """Resolve ``"04"``, ``"04_cifar_and_svhn"``, ``"04_cifar_and_svhn.ipynb"`` or a path to a notebook file."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists():
        return p
    folder = Path(folder) if folder else NOTEBOOKS_DIR
    stem = p.name[:-6] if p.name.endswith(".ipynb") else p.name
    matches = [folder / f"{info.name}.ipynb" for info in NOTEBOOKS if info.name == stem or info.name.startswith(stem + "_")]
    if not matches and (folder / f"{stem}.ipynb").exists():
        matches = [folder / f"{stem}.ipynb"]
    if len(matches) != 1:
        raise ValueError(f"no single notebook matches {str(name)!r}; the series is: "
                         + ", ".join(info.name for info in NOTEBOOKS))
    return matches[0]


def parse_value(text: str):
    """Command-line parameter values: JSON where it parses (numbers, true/false, null, lists), else the
    string itself (so ``-p dataset cifar100`` and ``-p epochs 3`` both do what you expect)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


@contextlib.contextmanager
def _environ(values: Mapping[str, str | None]):
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kernel_name() -> str:
    """The kernel papermill should use: "python3", which jupyter_client maps to this interpreter
    (``sys.executable``) when ipykernel is installed here."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    if spec.argv and spec.argv[0] not in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                                          sys.executable):
        raise ValueError(f"the 'python3' kernel runs {spec.argv[0]}, not this interpreter ({sys.executable}); "
                         f"run `{sys.executable} -m ipykernel install --sys-prefix`")
    return "python3"


def execute_notebook(name: str | os.PathLike, output_path: str | os.PathLike, parameters: Mapping[str, Any] | None = None,
                     *, figures_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
                     data_root: str | os.PathLike | None = None, timeout: int | None = None,
                     progress: bool = False, static: bool = True):
    """Run one notebook with papermill into ``output_path`` and return the executed notebook node.

    ``figures_dir``, ``results_dir`` and ``data_root`` are passed to the kernel as the kit's environment
    variables; ``static`` asks notebooks to draw figures instead of widgets.
    """
    import papermill as pm

    src = notebook_path(name)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        settings.FIGURES_ENV: str(figures_dir) if figures_dir else os.environ.get(settings.FIGURES_ENV),
        settings.RESULTS_ENV: str(results_dir) if results_dir else os.environ.get(settings.RESULTS_ENV),
        settings.DATA_ROOT_ENV: str(data_root) if data_root else os.environ.get(settings.DATA_ROOT_ENV),
        STATIC_ENV: "1" if static else None,
        "MPLBACKEND": os.environ.get("MPLBACKEND"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    with _environ(env):
        return pm.execute_notebook(
            str(src), str(output_path), parameters=dict(parameters or {}), kernel_name=kernel_name(),
            progress_bar=progress, cwd=str(src.parent), execution_timeout=timeout, log_output=False,
        )


def refresh_stored_outputs(name: str | os.PathLike, *, timeout: int = 600) -> Path:
    """Re-execute a notebook that is committed with its outputs (01 and 02, compared by nbval) in place,
    at its default parameters, with static figures and without papermill's metadata, so the stored
    outputs match what nbval will compute. Run after changing anything those notebooks print."""
    import tempfile

    import nbformat
    from nbclient import NotebookClient

    path = notebook_path(name)
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp, _environ({settings.RESULTS_ENV: tmp, STATIC_ENV: "1"}):
        NotebookClient(nb, timeout=timeout, kernel_name=kernel_name(),
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return path


@dataclass
class RunStatus:
    name: str
    status: str              # "ok", "skipped", "failed"
    detail: str = ""
    seconds: float = 0.0
    output: Path | None = None


def run_series(profile: str = "classroom", output: str | os.PathLike = "results/run", *,
               only: Sequence[str] | None = None, parameters: Mapping[str, Any] | None = None,
               data_root: str | os.PathLike | None = None, figures_dir: str | os.PathLike | None = None,
               timeout: int | None = None, log=print) -> list[RunStatus]:
    """Run the series (or the notebooks named in ``only``) with papermill at ``profile``.

    Executed notebooks go to ``<output>/notebooks/``, figures to ``<output>/figures/`` (or
    ``figures_dir``), measured numbers to ``<output>/results/``. A notebook whose data set is absent is
    skipped (reported, not failed); one that raises is reported as failed and the series goes on.
    """
    import time

    check_profile(profile)
    output = Path(output).expanduser().resolve()
    figures = Path(figures_dir).expanduser().resolve() if figures_dir else output / "figures"
    wanted = [notebook_path(n).stem for n in only] if only else [info.name for info in NOTEBOOKS]
    statuses: list[RunStatus] = []
    for info in NOTEBOOKS:
        if info.name not in wanted:
            continue
        params = {"profile": profile, "output_dir": str(output), **dict(parameters or {})}
        if data_root:
            params["data_root"] = str(data_root)
        needed = info.required_dataset(profile, params)
        if needed and not dataset_available(needed, data_root):
            where = Path(data_root) if data_root else settings.data_root()
            statuses.append(RunStatus(info.name, "skipped", f"no {needed} data under {where}"))
            log(f"[skip] {info.name}: no {needed} data under {where}")
            continue
        target = output / "notebooks" / f"{info.name}.ipynb"
        log(f"[run ] {info.name} (profile={profile})")
        start = time.perf_counter()
        try:
            execute_notebook(info.name, target, params, figures_dir=figures, results_dir=output,
                             data_root=data_root, timeout=timeout)
            statuses.append(RunStatus(info.name, "ok", "", time.perf_counter() - start, target))
        except Exception as exc:  # papermill's PapermillExecutionError carries the cell's error
            first = str(exc).strip().splitlines()
            detail = next((line for line in reversed(first) if line.strip()), type(exc).__name__)
            statuses.append(RunStatus(info.name, "failed", detail[:200], time.perf_counter() - start, target))
            log(f"[fail] {info.name}: {detail[:200]}")
    return statuses


def series_summary(output: str | os.PathLike, statuses: Iterable[RunStatus]) -> str:
    """The summary table for a finished :func:`run_series`."""
    status_map = {}
    for s in statuses:
        text = s.status if s.status == "ok" else f"{s.status}: {s.detail}"
        if s.status == "ok":
            text = f"ok ({s.seconds:.0f} s)"
        status_map[s.name] = text
    return summary_table(load_results(output), status_map)


# --------------------------------------------------------------------------------------------------
# Student edition

STUB_MARKER = "# YOUR CODE HERE"


def student_notebook(nb):
    """A copy of a solution-edition notebook for students: cells tagged ``solution`` are removed,
    outputs cleared, and cells tagged ``check`` get the ``raises-exception`` tag so "Run all" goes on
    past an unfinished exercise."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "solution" in tags:
            continue
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if "check" in tags and "raises-exception" not in tags:
                cell.metadata["tags"] = tags + ["raises-exception"]
        cells.append(cell)
    nb.cells = cells
    nb.metadata["sela_edition"] = "student"
    nbformat.validate(nb)
    return nb


def build_student_edition(output: str | os.PathLike = "student", source: str | os.PathLike | None = None) -> list[Path]:
    """Write the student edition of every notebook in ``source`` (default ``notebooks/``) to ``output``.

    Each exercise must have a stub cell (tagged ``exercise``, containing ``# YOUR CODE HERE``) that
    survives; a notebook with a solution cell but no stub is an error.
    """
    import nbformat

    source = Path(source) if source else NOTEBOOKS_DIR
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    paths = sorted(source.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks (NN_name.ipynb) in {source}")
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        n_solutions = sum("solution" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
        n_stubs = sum("exercise" in c.get("metadata", {}).get("tags", []) and STUB_MARKER in c.source
                      for c in nb.cells)
        if n_solutions and n_stubs < n_solutions:
            raise ValueError(f"{path.name}: {n_solutions} solution cell(s) but only {n_stubs} exercise stub(s) "
                             f"with {STUB_MARKER!r}")
        target = output / path.name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written


__all__ = [
    "NOTEBOOKS", "NotebookInfo", "PROFILES", "PAPER_RESULTS", "check_profile", "preset_for", "resolve_config",
    "pick", "output_folder", "checkpoint_folder", "frozen_evaluation", "dataset_available", "how_to_get", "stop_here", "resume", "NotebookStopped",
    "widgets_enabled", "cpu_dataset", "arch_for", "record_result", "load_results", "summary_table", "notebook_path", "parse_value",
    "kernel_name", "execute_notebook", "refresh_stored_outputs", "run_series", "RunStatus", "series_summary", "student_notebook",
    "build_student_edition",
]
