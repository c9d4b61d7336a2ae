"""A run's records: each notebook's status (``run.json``, what rebuilds a run's pages) and time
(``times.json``), read back from the records or, for an older run, from what papermill left in the
executed notebooks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sela_edu.files import write_whole
from sela_edu.course.series.notebooks import TIMES_RECORD, series_order


def read_notebook(path: str | os.PathLike):
    """An executed notebook, or a ValueError naming the file when it is not a readable notebook."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError, KeyError, AttributeError, nbformat.ValidationError) as exc:
        # nbformat raises any of these for a file that is missing, not JSON, or JSON but not a notebook
        raise ValueError(f"{path} is not a readable notebook: {exc}") from exc


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
    write_whole(path, json.dumps(record, indent=2) + "\n")
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
    return write_whole(Path(output) / TIMES_RECORD, json.dumps(times_record(statuses, profile), indent=2) + "\n")


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
             for name in series_order(p.stem for p in folder.glob("*.ipynb"))]
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


__all__ = ["RunStatus", "RUN_RECORD", "read_notebook", "save_run_statuses", "times_record", "save_times",
           "statuses_from_notebooks", "load_run_statuses"]
