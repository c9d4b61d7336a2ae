"""A notebook's measured numbers as small JSON files, and the summary table beside the paper's figures."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sela_edu import paper
from sela_edu.course.series.profiles import output_folder
from sela_edu.files import write_whole

#: The paper's headline figures (one home: :data:`sela_edu.paper.RESULTS`), keyed as notebooks record theirs.
PAPER_RESULTS = paper.RESULTS


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
                  profile: str | None = None, notes: str | None = None,
                  verdicts: list | None = None) -> Path:
    """Write a notebook's measured numbers to ``<folder>/results/<name>.json`` and return the path.

    ``values`` maps a key (use the keys of :data:`PAPER_RESULTS` where the paper reports the same
    quantity) to a number or string. ``folder`` defaults to ``settings.results_dir()``. ``verdicts``:
    the notebook's result sentences (:func:`sela_edu.course.views.verdicts.compare`), printed under the run's table.
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
        "verdicts": [str(v) for v in (verdicts or [])],
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    path = out / f"{name}.json"
    write_whole(path, json.dumps(record, indent=2) + "\n")
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


def format_value(value) -> str:
    """A measured or paper value as the tables show it: "-" for none, floats to 3 significant digits
    below 1 and one decimal above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def measure_rows(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """A record's values as (measure, measured, paper) strings, the paper's figure where
    :data:`PAPER_RESULTS` has the same key (else "-"). The text and the HTML summaries both use it."""
    return [(key, format_value(value), format_value(PAPER_RESULTS.get(key, (None, ""))[0]))
            for key, value in (record.get("values") or {}).items()]


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
        measures = measure_rows(records.get(name, {}))
        if not measures:
            rows.append((name, status, "", "", ""))
            continue
        for i, measure in enumerate(measures):
            rows.append((name if i == 0 else "", status if i == 0 else "", *measure))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    said = [(name, v) for name in names for v in records.get(name, {}).get("verdicts") or []]
    if said:
        lines += ["", "verdicts (computed from the numbers above):"]
        lines += [f"  {name[:2]}: {v}" for name, v in said]
    return "\n".join(lines)


__all__ = ["PAPER_RESULTS", "record_result", "load_results", "format_value", "measure_rows", "summary_table"]
