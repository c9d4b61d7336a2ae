"""A finished run of the series as pages to read in a browser, without Jupyter.

* :func:`write_notebook_page` turns one executed notebook into HTML with nbconvert's ``HTMLExporter``;
  its figures are already inline (``data:`` images) and pictures that markdown cells link by path are
  embedded too, so the pages need no file beside them. Formulas are typeset by MathJax, which the page
  loads from its CDN (nbconvert's default): offline, a formula shows as its TeX source.
* :func:`index_html` is the run's front page: each notebook's status and time with a link to its page,
  the measured numbers beside the paper's, and the verdicts.
* :func:`build_site` does both for a run folder (what ``sela-edu run`` does as it goes, and what
  ``sela-edu site FOLDER`` does again for an existing run).

Layout: ``<run>/index.html`` links ``<run>/notebooks/<name>.html``, beside each ``<name>.ipynb``.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sela_edu.course.series.notebooks import NOTEBOOKS
from sela_edu.course.series.records import RunStatus, load_run_statuses, read_notebook
from sela_edu.course.series.results import load_results, measure_rows

INDEX_NAME = "index.html"
#: the markdown cell put at the top of every page: back to the run's front page
BACK_LINK = f"[← all notebooks of this run](../{INDEX_NAME})"


def notebook_title(nb, fallback: str) -> str:
    """The notebook's first markdown heading (what a reader sees as its title), else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or fallback
    return fallback


def notebook_html(nb, title: str, resources_path: str | os.PathLike) -> str:
    """One notebook as a self-contained HTML page (JupyterLab's look), with a link back to the index.

    ``resources_path``: the folder that markdown cells' relative image paths start from."""
    import copy

    import nbformat
    from nbconvert import HTMLExporter

    page = copy.deepcopy(nb)
    page.cells.insert(0, nbformat.v4.new_markdown_cell(BACK_LINK))
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(page, resources={"metadata": {"name": title,
                                                                        "path": str(resources_path)}})
    return body


@dataclass(frozen=True)
class Page:
    """A notebook's HTML page and the title it shows (the index's link text)."""

    path: Path
    title: str


def write_notebook_page(ipynb: str | os.PathLike, target: str | os.PathLike | None = None) -> Page:
    """Write ``<name>.html`` beside the executed notebook ``ipynb`` (or to ``target``); return where, and
    the title it shows."""
    ipynb = Path(ipynb)
    nb = read_notebook(ipynb)
    page = Page(Path(target) if target else ipynb.with_suffix(".html"), notebook_title(nb, ipynb.stem))
    page.path.write_text(notebook_html(nb, page.title, ipynb.parent), encoding="utf-8")
    return page


# ----------------------------------------------------------------------------------------------- index

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
p.meta { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; font-size: .95rem; }
th, td { text-align: left; vertical-align: top; padding: .35rem .6rem; border-bottom: 1px solid #d1d9e0; }
th { background: #f6f8fa; border-bottom: 2px solid #d1d9e0; }
tbody + tbody { border-top: 2px solid #d1d9e0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.notebook { min-width: 16rem; }
td.notebook small { color: #59636e; display: block; }
td.verdicts { background: #f6f8fa; }
td.verdicts ul { margin: 0; padding-left: 1.2rem; }
.status { display: inline-block; padding: 0 .5rem; border-radius: 1rem; font-size: .85rem; white-space: nowrap; }
.status.ok { background: #dafbe1; color: #116329; }
.status.failed { background: #ffebe9; color: #a40e26; }
.status.skipped, .status.other { background: #eaeef2; color: #424a53; }
td.detail { color: #424a53; font-style: italic; }
td.detail.failed { color: #a40e26; font-style: normal; font-family: ui-monospace, monospace; font-size: .85rem; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _href(path: str) -> str:
    """A relative link: each path segment percent-encoded, then escaped for an attribute."""
    return _e(urllib.parse.quote(path))


def _status_cell(status, rows: int) -> str:
    kind = status.status if status.status in ("ok", "failed", "skipped") else "other"
    return f"<td rowspan='{rows}'><span class='status {kind}'>{_e(status.status)}</span></td>"


def _seconds_cell(status, rows: int) -> str:
    ran = status.status in ("ok", "failed")
    return f"<td class='num' rowspan='{rows}'>{f'{status.seconds:.0f} s' if ran else '-'}</td>"


def _notebook_cell(name: str, title: str, href: str | None, rows: int) -> str:
    label = f"<a href='{_href(href)}'>{_e(title)}</a>" if href else _e(title)
    return f"<td class='notebook' rowspan='{rows}'>{label}<small>{_e(name)}</small></td>"


def _notebook_rows(status, title: str, href: str | None, record: Mapping) -> str:
    """One notebook's rows of the summary: its name, status and time down the left; on the right first
    why it was skipped or failed, then its verdicts (what a reader looks for), then one row per measure."""
    right = [f"<td colspan='3' class='detail {_e(status.status)}'>{_e(status.detail)}</td>"] if status.detail else []
    verdicts = "".join(f"<li>{_e(v)}</li>" for v in record.get("verdicts") or [])
    right += [f"<td colspan='3' class='verdicts'><ul>{verdicts}</ul></td>"] if verdicts else []
    right += [f"<td>{_e(key)}</td><td class='num'>{_e(measured)}</td><td class='num'>{_e(paper)}</td>"
              for key, measured, paper in measure_rows(record)]
    right = right or ["<td colspan='3'></td>"]
    lead = (_notebook_cell(status.name, title, href, len(right)) + _status_cell(status, len(right))
            + _seconds_cell(status, len(right)))
    rows = "".join(f"<tr>{lead if i == 0 else ''}{cells}</tr>" for i, cells in enumerate(right))
    return f"<tbody>{rows}</tbody>"


def index_html(statuses: Iterable, records: Mapping[str, Mapping], pages: Mapping[str, str],
               titles: Mapping[str, str], *, heading: str = "SeLa course: a run of the notebooks",
               meta: str = "") -> str:
    """The run's front page. ``statuses``: :class:`~sela_edu.course.series.records.RunStatus` (name, status,
    detail, seconds) in series order; ``records``: the results JSON by name; ``pages``: each notebook's
    page as a link relative to the index (absent: no page); ``titles``: what each link says."""

    statuses = list(statuses)
    known = {s.name for s in statuses}
    # numbers recorded by notebooks outside this run's list still belong in the table, as the text summary shows them
    statuses += [RunStatus(name, "recorded") for name in records if name not in known]
    body = "".join(_notebook_rows(s, titles.get(s.name, s.name), pages.get(s.name), records.get(s.name, {}))
                   for s in statuses)
    head = ("<thead><tr><th>notebook</th><th>status</th><th class='num'>time</th><th>measure</th>"
            "<th class='num'>measured</th><th class='num'>paper</th></tr></thead>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(heading)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_e(heading)}</h1><p class='meta'>{_e(meta)}</p>"
            f"<table>{head}{body}</table>"
            "<p class='meta'>Verdicts are computed from the measured numbers; the paper's column shows its "
            "figure where it reports the same quantity.</p></body></html>\n")


def executed_notebook(run: str | os.PathLike, name: str) -> Path:
    """Where :func:`~sela_edu.course.series.runner.run_series` puts the executed notebook ``name`` of a run."""
    return Path(run) / "notebooks" / f"{name}.ipynb"


def try_write_page(ipynb: str | os.PathLike, log=print) -> Page | None:
    """:func:`write_notebook_page`, except that a notebook that cannot be converted is reported with
    ``log`` and left without a page: a broken page must not fail a run whose notebooks did run."""
    try:
        return write_notebook_page(ipynb)
    except ValueError as exc:
        log(f"no HTML page for {Path(ipynb).name}: {exc}")
        Path(ipynb).with_suffix(".html").unlink(missing_ok=True)   # an earlier run's page would be linked instead
        return None


def _existing_pages(run: Path, names: Iterable[str]) -> dict[str, Page]:
    """The pages already written for ``names``, with their titles read from the executed notebooks."""
    pages = {}
    for name in names:
        ipynb = executed_notebook(run, name)
        if ipynb.with_suffix(".html").is_file():
            try:
                title = notebook_title(read_notebook(ipynb), name)
            except ValueError:
                title = name
            pages[name] = Page(ipynb.with_suffix(".html"), title)
    return pages


def _series_titles() -> dict[str, str]:

    return {info.name: info.title for info in NOTEBOOKS}


def _meta_line(statuses: list, profile: str | None) -> str:
    ran = [s for s in statuses if s.status in ("ok", "failed")]
    parts = [f"profile {profile}"] if profile else []
    parts.append(f"{len(ran)} notebook(s) executed, {sum(s.seconds for s in statuses):.0f} s of notebook time")
    parts.append(f"page written {_dt.datetime.now().isoformat(sep=' ', timespec='minutes')}")
    return "; ".join(parts)


def write_index(run: str | os.PathLike, statuses: Iterable, *, profile: str | None = None) -> Path:
    """Write ``<run>/index.html`` for ``statuses``, linking the notebook pages that exist; return its path."""
    run = Path(run)
    statuses = list(statuses)
    records = load_results(run)
    found = _existing_pages(run, [s.name for s in statuses] + list(records))
    pages = {name: page.path.relative_to(run).as_posix() for name, page in found.items()}
    titles = {**_series_titles(), **{name: page.title for name, page in found.items()}}
    index = run / INDEX_NAME
    index.write_text(index_html(statuses, records, pages, titles, meta=_meta_line(statuses, profile)),
                     encoding="utf-8")
    return index


def build_site(run: str | os.PathLike, statuses: Iterable | None = None, *, profile: str | None = None,
               log=print) -> Path:
    """Write every executed notebook of the run folder ``run`` as HTML and the run's ``index.html``;
    return the index's path. ``statuses`` default to the run's own record (``run.json``) or, for a
    folder without one, to what papermill wrote into each executed notebook."""

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"no run folder at {run}")
    if statuses is None:
        statuses, profile = load_run_statuses(run)
    statuses = list(statuses)
    if not statuses:
        raise ValueError(f"{run} holds no executed notebooks (notebooks/*.ipynb) and no run.json")
    for status in statuses:
        if executed_notebook(run, status.name).is_file():
            try_write_page(executed_notebook(run, status.name), log)
    return write_index(run, statuses, profile=profile)


__all__ = ["INDEX_NAME", "Page", "notebook_title", "notebook_html", "write_notebook_page",
           "executed_notebook", "try_write_page", "index_html", "write_index", "build_site"]
