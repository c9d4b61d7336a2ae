"""Running the notebook series with papermill: one overall progress bar, each notebook's own progress,
the kernel's noise kept out of the terminal, and the summary table.

* :data:`NOTEBOOKS` lists the series in order, with what each one needs; how long each took comes from
  the recorded run in ``docs/times.json`` (:func:`recorded_seconds`), which weights the progress bar.
* :func:`execute_notebook` runs one notebook; :func:`run_series` runs the series; :func:`series_summary`
  prints the table of what they measured.
* :func:`refresh_stored_outputs` re-executes the notebooks committed with outputs (01 and 02) the way
  the test suite's nbval check runs them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sela_edu import settings
from sela_edu.course.profiles import STATIC_ENV, check_profile
from sela_edu.course.results import load_results, summary_table
from sela_edu.course.site import INDEX_NAME, read_notebook, try_write_page, write_index

NOTEBOOKS_DIR = settings.REPO_ROOT / "notebooks"

#: A run's record of how long each notebook took (what :func:`run_series` writes beside the notebooks).
TIMES_RECORD = "times.json"
#: The recorded runs the kit states its times from (one record per profile, copied from a run's
#: ``times.json``): the progress bar's weights, the README's course table, the notebooks' "Takes" lines.
RECORDED_TIMES = settings.REPO_ROOT / "docs" / TIMES_RECORD
#: A notebook's weight where no recorded run says how long it took (an installed wheel has no docs/):
#: every notebook then weighs the same.
DEFAULT_SECONDS = 60.0


def load_recorded_times(path: str | os.PathLike = RECORDED_TIMES) -> dict[str, dict[str, Any]]:
    """The recorded runs in ``path``, one ``times.json`` record per profile (``{"profiles": {...}}``)."""
    path = Path(path)
    try:
        profiles = json.loads(path.read_text())["profiles"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a file of recorded times (a 'profiles' mapping of times.json records): "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(profiles, dict):
        raise ValueError(f"{path}: 'profiles' must map a profile name to a times.json record")
    return profiles


@functools.lru_cache(maxsize=None)
def recorded_seconds(profile: str) -> dict[str, float]:
    """Each notebook's seconds in the recorded run at ``profile`` (only those that ran); empty when
    ``docs/times.json`` is absent or has no run at that profile."""
    if not RECORDED_TIMES.is_file():
        return {}
    record = load_recorded_times(RECORDED_TIMES).get(profile, {})
    return {name: float(entry["seconds"]) for name, entry in record.get("notebooks", {}).items()
            if entry.get("status") == "ok"}


@dataclass(frozen=True)
class NotebookInfo:
    """One notebook of the series. ``needs(profile, parameters)`` names the data set that must be on
    disk for the notebook to be worth running (``None``: it always runs)."""

    name: str
    title: str
    needs: Any = None

    def required_dataset(self, profile: str, parameters: Mapping[str, Any]) -> str | None:
        return self.needs(profile, dict(parameters)) if callable(self.needs) else self.needs

    def expected_seconds(self, profile: str) -> float:
        """Its time in the recorded run at ``profile`` (the weight of its share of the progress bar)."""
        return recorded_seconds(profile).get(self.name, DEFAULT_SECONDS)


#: Notebooks whose ``dataset`` parameter defaults to the CPU data set (Fashion-MNIST, else the digits).
CPU_NOTEBOOKS = ("02_self_labelling_objective", "03_self_labelling_on_cpu", "05_imbalance", "06_label_transfer")

NOTEBOOKS: tuple[NotebookInfo, ...] = (
    NotebookInfo("01_optimal_transport_toy", "Optimal transport with warehouses and shops"),
    NotebookInfo("02_self_labelling_objective", "Why self-labelling needs equipartition"),
    NotebookInfo("03_self_labelling_on_cpu", "The whole method on a CPU"),
    NotebookInfo("04_cifar_and_svhn", "CIFAR-10/100 and SVHN at the paper's settings",
                 needs=lambda profile, p: p.get("dataset") or "cifar10"),
    NotebookInfo("05_imbalance", "Imbalanced data",
                 needs=lambda profile, p: (p.get("dataset") or "cifar10") if profile == "paper" else None),
    NotebookInfo("06_label_transfer", "Label transfer"),
    NotebookInfo("07_imagenet_scale", "ImageNet scale"),
    # the ledger's runs are on Fashion-MNIST (the smoke ledger's on the digits); by default the classroom
    # profile only reads the recorded ledger, so it needs data only when told to run what docs/ledger lacks
    NotebookInfo("08_what_reproduces", "What reproduces: the paper's claims, tested",
                 needs=lambda profile, p: "fashion-mnist" if profile != "smoke" and p.get("run_missing") else None),
)


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


def _absolute(path) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


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


def quiet_kernel_manager(stderr_path: str | os.PathLike | None):
    """A kernel manager class whose kernels write their own stderr (the "running over TCP without
    encryption" warning and similar start-up noise) to ``stderr_path`` instead of the terminal
    (``None``: discarded). Tracebacks of failing cells still reach the executed notebook."""
    import subprocess

    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            if stderr_path is None:
                kw.setdefault("stderr", subprocess.DEVNULL)
            else:
                Path(stderr_path).parent.mkdir(parents=True, exist_ok=True)
                kw.setdefault("stderr", open(stderr_path, "a"))  # noqa: SIM115 - the kernel process owns it
            return await super().start_kernel(**kw)

    return QuietKernelManager


def execute_notebook(name: str | os.PathLike, output_path: str | os.PathLike, parameters: Mapping[str, Any] | None = None,
                     *, figures_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
                     data_root: str | os.PathLike | None = None, timeout: int | None = None,
                     progress: bool | Mapping[str, Any] = False, static: bool = True,
                     extra_env: Mapping[str, str | None] | None = None, kernel_log: str | os.PathLike | None = None):
    """Run one notebook with papermill into ``output_path`` and return the executed notebook node.

    ``figures_dir``, ``results_dir`` and ``data_root`` are passed to the kernel as the kit's environment
    variables; ``static`` asks notebooks to draw figures instead of widgets. ``progress``: papermill's
    per-cell bar (a dict is passed on to tqdm). The kernel's own stderr goes to ``kernel_log`` (default:
    ``<output folder>/<notebook>.kernel.log``), not to the terminal.
    """
    import papermill as pm

    src = notebook_path(name)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # the kernel runs in notebooks/: relative folders are taken from this process's working directory
    env = {
        settings.FIGURES_ENV: _absolute(figures_dir or os.environ.get(settings.FIGURES_ENV)),
        settings.RESULTS_ENV: _absolute(results_dir or os.environ.get(settings.RESULTS_ENV)),
        settings.DATA_ROOT_ENV: _absolute(data_root or os.environ.get(settings.DATA_ROOT_ENV)),
        STATIC_ENV: "1" if static else None,
        "MPLBACKEND": os.environ.get("MPLBACKEND"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        **dict(extra_env or {}),
    }
    log_path = Path(kernel_log) if kernel_log else output_path.with_suffix(".kernel.log")
    with _environ(env):
        return pm.execute_notebook(
            str(src), str(output_path), parameters=dict(parameters or {}), kernel_name=kernel_name(),
            progress_bar=progress, cwd=str(src.parent), execution_timeout=timeout, log_output=False,
            kernel_manager_class=quiet_kernel_manager(log_path),
        )


#: nbval's tag for a cell that runs but whose output is not compared; the kit stores such cells empty
UNSTORED_TAG = "nbval-ignore-output"


def stored_output_environment(data_root: str | os.PathLike) -> dict[str, str]:
    """The environment under which the notebooks committed with outputs are executed, both when their
    outputs are refreshed and when nbval compares them: static figures, no downloads and an empty data
    root, so that 02 runs on the digits on every machine (its stored outputs say so at the top)."""
    return {STATIC_ENV: "1", settings.OFFLINE_ENV: "1", settings.DATA_ROOT_ENV: str(data_root)}


def refresh_stored_outputs(name: str | os.PathLike, *, figures_dir: str | os.PathLike | None = None,
                           timeout: int = 600) -> Path:
    """Re-execute a notebook that is committed with its outputs (01 and 02, compared by nbval) in place,
    at its default parameters, under :func:`stored_output_environment` and without papermill's
    metadata, so the stored outputs match what nbval will compute. Run after changing anything those
    notebooks print. Its figures go to ``figures_dir`` (``sela-edu refresh``: the committed ``figures/``),
    else to a temporary folder."""
    import nbformat
    from nbclient import NotebookClient

    path = notebook_path(name)
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        env = {settings.RESULTS_ENV: tmp, settings.FIGURES_ENV: str(Path(figures_dir or Path(tmp) / "figures")),
               **stored_output_environment(Path(tmp) / "no-data")}
        with _environ(env):
            NotebookClient(nb, timeout=timeout, kernel_name=kernel_name(),
                           kernel_manager_class=quiet_kernel_manager(None),
                           resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if UNSTORED_TAG in cell.metadata.get("tags", []):
            # its output follows a training run or this machine's rounding: storing it would fail elsewhere
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path)
    return path


@dataclass
class RunStatus:
    name: str
    status: str              # "ok", "skipped", "failed"
    detail: str = ""
    seconds: float = 0.0
    output: Path | None = None


#: A run's own record of its notebooks' statuses, beside its notebooks/ and results/ folders.
RUN_RECORD = "run.json"


def save_run_statuses(output: str | os.PathLike, statuses: Iterable[RunStatus], profile: str | None) -> Path:
    """Write ``<output>/run.json`` (profile; each notebook's status, detail and seconds), so that the run's
    pages can be rebuilt later (``sela-edu site``) with the skipped notebooks and the failures' reasons."""
    record = {"profile": profile,
              "notebooks": [{"name": s.name, "status": s.status, "detail": s.detail, "seconds": s.seconds}
                            for s in statuses]}
    path = Path(output) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def times_record(statuses: Iterable[RunStatus], profile: str | None) -> dict[str, Any]:
    """How long a run's notebooks took: profile, date, the machine's cores, each notebook's seconds and
    status, and the total (the form ``docs/times.json`` keeps one of per profile)."""
    statuses = list(statuses)
    return {"profile": profile, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": {"cores": os.cpu_count()},
            "total_seconds": round(sum(s.seconds for s in statuses), 1),
            "notebooks": {s.name: {"seconds": round(s.seconds, 1), "status": s.status} for s in statuses}}


def save_times(output: str | os.PathLike, statuses: Iterable[RunStatus], profile: str | None) -> Path:
    """Write ``<output>/times.json`` (:func:`times_record`); copy it into ``docs/times.json``'s profile
    entry to make a run the one the kit states its times from."""
    path = Path(output) / TIMES_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times_record(statuses, profile), indent=2) + "\n")
    return path


def _series_order(names: Iterable[str]) -> list[str]:
    order = {info.name: i for i, info in enumerate(NOTEBOOKS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def _papermill_status(path: Path) -> tuple[RunStatus, str | None]:
    """What papermill wrote into an executed notebook: its time, whether a cell raised (and what), its profile."""
    nb = read_notebook(path)
    meta = nb.metadata.get("papermill", {})
    errors = [f"{o.get('ename', 'error')}: {o.get('evalue', '')}" for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    failed = bool(meta.get("exception")) or bool(errors)
    status = RunStatus(path.stem, "failed" if failed else "ok", errors[-1][:200] if errors else "",
                       float(meta.get("duration") or 0.0), path)
    return status, (meta.get("parameters") or {}).get("profile")


def statuses_from_notebooks(output: str | os.PathLike) -> tuple[list[RunStatus], str | None]:
    """For a run folder without ``run.json`` (made before it was written): the statuses papermill left in
    ``<output>/notebooks/*.ipynb``, in series order, and the profile they ran at."""
    folder = Path(output) / "notebooks"
    pairs = [_papermill_status(folder / f"{name}.ipynb")
             for name in _series_order(p.stem for p in folder.glob("*.ipynb"))]
    profiles = {profile for _, profile in pairs if profile}
    return [s for s, _ in pairs], (profiles.pop() if len(profiles) == 1 else None)


def load_run_statuses(output: str | os.PathLike) -> tuple[list[RunStatus], str | None]:
    """A finished (or interrupted) run's statuses and profile: from ``run.json``, else from the notebooks."""
    path = Path(output) / RUN_RECORD
    if not path.is_file():
        return statuses_from_notebooks(output)
    try:
        record = json.loads(path.read_text())
        statuses = [RunStatus(n["name"], n["status"], n.get("detail", ""), float(n.get("seconds", 0.0)),
                              Path(output) / "notebooks" / f"{n['name']}.ipynb") for n in record["notebooks"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a run record ({type(exc).__name__}: {exc}); delete it to rebuild the "
                         "pages from the executed notebooks alone") from exc
    return statuses, record.get("profile")


def _publish(output: Path, statuses: list[RunStatus], profile: str, say: Callable[[str], None]) -> None:
    """After each notebook: the run record, the notebook's HTML page and the index, so that a run can be
    read in a browser while it goes on, and after an interruption."""
    save_run_statuses(output, statuses, profile)
    last = statuses[-1]
    if last.output is not None and last.output.is_file():
        try_write_page(last.output, say)
    write_index(output, statuses, profile=profile)


def _progress_bar(total: float, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=round(total), desc="series", unit="s", disable=not enabled, position=0, leave=True,
                bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} est. s "
                           "[{elapsed} elapsed, about {remaining} left]")


def run_series(profile: str = "classroom", output: str | os.PathLike = "results/run", *,
               only: Sequence[str] | None = None, parameters: Mapping[str, Any] | None = None,
               data_root: str | os.PathLike | None = None, figures_dir: str | os.PathLike | None = None,
               timeout: int | None = None, log: Callable[[str], None] | None = None,
               progress: bool = True, pages: bool = True) -> list[RunStatus]:
    """Run the series (or the notebooks named in ``only``) with papermill at ``profile``.

    First the CPU data set is settled once (:func:`sela_edu.course.cpu_dataset`: Fashion-MNIST from the
    data root, downloaded when missing, else the digits with a notice). Then every notebook runs under
    one overall progress bar (weighted by the recorded times in ``docs/times.json``, so its estimate of
    the time left follows this machine's speed) with the notebook's own per-cell bar below it.
    Executed notebooks go to ``<output>/notebooks/``, figures to ``<output>/figures/`` (or
    ``figures_dir``), measured numbers to ``<output>/results/``, each kernel's stderr to
    ``<output>/notebooks/<name>.kernel.log``. A notebook whose data set is absent is skipped
    (reported, not failed); one that raises is reported as failed and the series goes on.
    With ``pages`` (the default), after each notebook its HTML page goes beside it and
    ``<output>/index.html`` and ``<output>/run.json`` are brought up to date (:mod:`.site`).
    ``<output>/times.json`` records how long each notebook took (:func:`save_times`), even when the
    series is interrupted.
    """
    from tqdm.auto import tqdm

    from sela_edu.course.data_choice import cpu_dataset
    from sela_edu.data import available

    check_profile(profile)
    say = log or tqdm.write
    output = Path(output).expanduser().resolve()
    figures = Path(figures_dir).expanduser().resolve() if figures_dir else output / "figures"
    wanted = [notebook_path(n).stem for n in only] if only else [info.name for info in NOTEBOOKS]
    chosen = [info for info in NOTEBOOKS if info.name in wanted]
    extra_env: dict[str, str | None] = {}
    if any(info.name in CPU_NOTEBOOKS for info in chosen) and not (parameters or {}).get("dataset"):
        cpu = cpu_dataset(profile, None, data_root, log=say)
        if cpu == "digits" and profile != "smoke":
            extra_env[settings.OFFLINE_ENV] = "1"   # the notebooks need not try the network again
        say(f"CPU notebooks' data set: {cpu}")
    statuses: list[RunStatus] = []
    bar = _progress_bar(sum(info.expected_seconds(profile) for info in chosen), progress)
    try:
        for info in chosen:
            weight = round(info.expected_seconds(profile))
            # the data location travels one way only, as $SELA_DATA_ROOT (execute_notebook makes it absolute)
            params = {"profile": profile, "output_dir": str(output), **dict(parameters or {})}
            needed = info.required_dataset(profile, params)
            if needed and not available(needed, data_root):
                where = Path(data_root) if data_root else settings.data_root()
                statuses.append(RunStatus(info.name, "skipped", f"no {needed} data under {where}"))
                say(f"[skip] {info.name}: no {needed} data under {where}")
                if pages:
                    _publish(output, statuses, profile, say)
                bar.update(weight)
                continue
            target = output / "notebooks" / f"{info.name}.ipynb"
            bar.set_description(f"series ({info.name[:2]})")
            start = time.perf_counter()
            cell_bar = {"unit": "cell", "desc": f"  {info.name}", "position": 1, "leave": False} if progress else False
            try:
                execute_notebook(info.name, target, params, figures_dir=figures, results_dir=output,
                                 data_root=data_root, timeout=timeout, progress=cell_bar, extra_env=extra_env)
                seconds = time.perf_counter() - start
                statuses.append(RunStatus(info.name, "ok", "", seconds, target))
                say(f"[ ok ] {info.name}: {seconds:.0f} s")
            except Exception as exc:  # papermill's PapermillExecutionError carries the cell's error
                first = str(exc).strip().splitlines()
                detail = next((line for line in reversed(first) if line.strip()), type(exc).__name__)
                statuses.append(RunStatus(info.name, "failed", detail[:200], time.perf_counter() - start, target))
                say(f"[fail] {info.name} after {time.perf_counter() - start:.0f} s: {detail[:200]}")
            if pages:
                _publish(output, statuses, profile, say)
            bar.update(weight)
    finally:
        bar.close()
        if statuses:
            save_times(output, statuses, profile)
    return statuses


def series_summary(output: str | os.PathLike, statuses: Iterable[RunStatus], *,
                   figures_dir: str | os.PathLike | None = None) -> str:
    """The summary table for a finished :func:`run_series`, ending with where its pages, the executed
    notebooks and figures are."""
    statuses = list(statuses)
    status_map = {}
    for s in statuses:
        status_map[s.name] = f"ok ({s.seconds:.0f} s)" if s.status == "ok" else f"{s.status}: {s.detail}"
    output = Path(output)
    figures = Path(figures_dir) if figures_dir else output / "figures"
    total = sum(s.seconds for s in statuses)
    index = output / INDEX_NAME
    return (summary_table(load_results(output), status_map)
            + (f"\n\npages to read in a browser: {index}" if index.is_file() else "\n")
            + f"\nexecuted notebooks: {output / 'notebooks'}\nfigures: {figures}\nresults (JSON): "
              f"{output / 'results'}\nnotebook time in all: {total:.0f} s")


__all__ = ["NOTEBOOKS", "NOTEBOOKS_DIR", "CPU_NOTEBOOKS", "NotebookInfo", "notebook_path", "parse_value",
           "kernel_name", "quiet_kernel_manager", "execute_notebook", "UNSTORED_TAG", "stored_output_environment",
           "refresh_stored_outputs", "RunStatus", "RUN_RECORD", "save_run_statuses", "TIMES_RECORD",
           "RECORDED_TIMES", "DEFAULT_SECONDS", "load_recorded_times", "recorded_seconds", "times_record", "save_times", "statuses_from_notebooks",
           "load_run_statuses", "run_series", "series_summary"]
