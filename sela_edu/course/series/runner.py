"""Running the notebook series with papermill: one overall progress bar, each notebook's own progress,
the kernel's noise kept out of the terminal, and the summary table. The series itself is
:mod:`.notebooks`; a run's records, :mod:`.records`; its pages, :mod:`.site`.

* :func:`execute_notebook` runs one notebook; :func:`run_series` runs the series; :func:`series_summary`
  prints the table of what they measured.
* :func:`refresh_stored_outputs` re-executes the notebooks committed with outputs (01 and 02) the way
  the test suite's nbval check runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sela_edu import settings
from sela_edu.course.series.profiles import STATIC_ENV, check_profile
from sela_edu.course.series.results import load_results, summary_table
from sela_edu.course.series.notebooks import CPU_NOTEBOOKS, NOTEBOOKS, notebook_path
from sela_edu.course.series.records import RunStatus, save_run_statuses, save_times
from sela_edu.course.series.site import INDEX_NAME, try_write_page, write_index


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

    from sela_edu.course.series.data_choice import cpu_dataset
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


__all__ = ["parse_value", "kernel_name", "quiet_kernel_manager", "execute_notebook", "UNSTORED_TAG",
           "stored_output_environment", "refresh_stored_outputs", "run_series", "series_summary"]
