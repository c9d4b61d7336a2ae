"""The series as data: its notebooks in order, what each needs, where they are, and how long each took in
the recorded runs (``docs/times.json``, which weights the runner's progress bar and states the README's
times)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sela_edu import settings

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
CPU_NOTEBOOKS = ("02_self_labelling_objective", "03_self_labelling_on_cpu", "05_imbalance", "06_label_transfer",
                 "09_from_sela_to_swav")


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
    # SeLa's successors: two short trainings on the CPU data set (the digits at smoke); the ledger's rows
    # of claims 10-14 are read from docs/ledger
    NotebookInfo("09_from_sela_to_swav", "From SeLa to SwAV"),
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


def series_order(names: Iterable[str]) -> list[str]:
    order = {info.name: i for i, info in enumerate(NOTEBOOKS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


__all__ = ["NOTEBOOKS", "NOTEBOOKS_DIR", "CPU_NOTEBOOKS", "NotebookInfo", "notebook_path", "series_order",
           "TIMES_RECORD", "RECORDED_TIMES", "DEFAULT_SECONDS", "load_recorded_times", "recorded_seconds"]
