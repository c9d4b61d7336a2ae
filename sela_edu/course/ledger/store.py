"""The ledger's stored results, and running what is missing: every run saves its result as one JSON file
named after it (written whole or not at all), a second call skips what is there, and a damaged file is
named in the error. The runs themselves are data in :mod:`.runs`; what each kind does, :mod:`.execute`."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sela_edu.course.ledger.claims import claims_for
from sela_edu.course.ledger.runs import RESULT_FORMAT, LedgerProfile, Run, get_profile, plan
from sela_edu.files import write_whole

#: runner(run, context) -> the run's measures (and anything else worth keeping), a JSON-able dict
Runner = Callable[[Run, Any], Mapping[str, Any]]


class LedgerFileError(ValueError):
    """A stored result that cannot be used (unreadable, partial, another format or another setting)."""


def result_path(folder: str | os.PathLike, run: Run) -> Path:
    return Path(folder) / f"{run.name}.json"


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    """Write ``result`` as JSON, whole or not at all (an interrupted write leaves no partial file under the
    run's name)."""
    write_whole(path, json.dumps(result, indent=1, allow_nan=True))


def store_run(run: Run, profile: LedgerProfile, folder: str | os.PathLike, runner: Runner, context: Any) -> dict[str, Any]:
    """Run ``run`` with ``runner`` and store its result, with the seconds it took, in ``folder``."""
    t0 = time.perf_counter()
    produced = dict(runner(run, context))
    result = {"format": RESULT_FORMAT, "name": run.name, "setting": run.setting.name, "seed": run.seed,
              "run": run.identity(profile), "seconds": round(time.perf_counter() - t0, 2),
              "measures": _finite(produced.pop("measures")), **produced}
    write_result(result_path(folder, run), result)
    return result


def read_result(path: Path, run: Run | None = None, profile: LedgerProfile | None = None) -> dict[str, Any]:
    """A stored result, checked: readable JSON, this format, with measures, and (given ``run`` and
    ``profile``) produced by that run. Raises :class:`LedgerFileError` naming the file."""
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LedgerFileError(f"{path}: not a readable ledger result ({err}); delete it to run it again") from err
    if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT or not isinstance(
            result.get("measures"), dict):
        raise LedgerFileError(f"{path}: not a ledger result of format {RESULT_FORMAT} (partial or older file); "
                              "delete it to run it again")
    if run is not None and profile is not None and result.get("run") != run.identity(profile):
        raise LedgerFileError(f"{path}: stored by another setting ({result.get('run')}); this ledger runs "
                              f"{run.identity(profile)}: use another folder, or delete the file")
    return result


def read_results(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every result stored in ``folder``, keyed by run name (a damaged file raises LedgerFileError)."""
    folder = Path(folder)
    return {p.stem: read_result(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def run_ledger(profile: str | LedgerProfile = "smoke", folder: str | os.PathLike | None = None, *,
               only: Sequence[str] | None = None, runner: Runner | None = None, context: Any = None,
               progress: bool = True, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run what the claims ``only`` names (None: all) need at ``profile`` and is not yet in ``folder``;
    return every result the plan needs, keyed by run name.

    Each run's result is written to ``folder/<run>.json`` as soon as it ends, with the seconds it took,
    so an interrupted ledger resumes where it stopped. ``runner`` executes one run (default
    :func:`sela_edu.course.ledger.execute.execute_run`, with a :class:`~sela_edu.course.ledger.execute.LedgerContext`
    holding the data); tests pass a fake one.
    """
    from tqdm.auto import tqdm

    profile = get_profile(profile) if isinstance(profile, str) else profile
    if folder is None:
        raise ValueError("give the results folder (the recorded ledger: docs/ledger)")
    folder = Path(folder)
    runs = plan(profile, claims_for(only))
    results, todo = {}, []
    for run in runs:
        path = result_path(folder, run)
        if path.exists():
            results[run.name] = read_result(path, run, profile)
        else:
            todo.append(run)
    log(f"ledger ({profile.name}): {len(runs)} runs, {len(runs) - len(todo)} stored in {folder}, {len(todo)} to run")
    if todo and runner is None:
        from sela_edu.course.ledger.execute import LedgerContext, execute_run

        runner, context = execute_run, context or LedgerContext(profile, folder)
    for run in tqdm(todo, desc="ledger", disable=not progress):
        results[run.name] = store_run(run, profile, folder, runner, context)
    return results


def _finite(measures: Mapping[str, Any]) -> dict[str, float]:
    """Measures as floats; a missing value (NaN) is an error of the run, not a number to average."""
    out = {k: float(v) for k, v in measures.items()}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"the run measured no finite value for {bad}")
    return out


def total_seconds(results: Mapping[str, Mapping[str, Any]]) -> float:
    """Machine time of the stored runs, summed."""
    return float(sum(r["seconds"] for r in results.values()))


__all__ = ["LedgerFileError", "result_path", "write_result", "read_result", "read_results", "Runner", "store_run",
           "run_ledger", "total_seconds"]
