"""The ledger's runs as data, and running them resumably: every run saves its result as one JSON file
named after it (written whole or not at all), a second call skips what is there, and a damaged file
is named in the error.

A *setting* is what a claim compares (``"sela"``, ``"kmeans-heavy"``, ``"k-over3"``, ...): a kind of run
(train, label transfer, the collapse loop, the label-step timings), a trainer preset with overrides,
and a training subset. A *run* is a setting at one seed, named ``<setting>_s<seed>``. The settings of a
profile (:data:`PROFILES`: ``smoke`` for tests and the notebook's smoke run, ``classroom`` for the
recorded ledger) are built by :func:`setting_specs`; what each kind measures is in
:mod:`sela_edu.course.ledger_exec`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sela_edu.course.ledger import CLAIMS, Claim, claims_for

#: bump when the stored result's shape changes: older files then get a clear error instead of a wrong table
RESULT_FORMAT = 1


@dataclass(frozen=True)
class LedgerProfile:
    """The ledger at one size: the trainer ``preset`` and ``overrides`` every training run starts from
    (the ledger's schedule), the ``seeds``, the evaluation's kNN memory / probe training set size
    (``eval_images`` of the balanced training split; None: all), and the sizes of the cheap claims."""

    name: str
    dataset: str
    preset: str
    overrides: Mapping[str, Any]
    seeds: tuple[int, ...]
    eval_images: int | None
    collapse: Mapping[str, Any]        # images, rounds, steps, clusters, lr, lam (claim 1: notebook 02's loop)
    timing: Mapping[str, Any]          # sizes (N), k, ks (K), n_k, lam (claim 9: notebook 07's harness)
    classes: int = 10


PROFILES: dict[str, LedgerProfile] = {
    # seconds: two seeds of the smoke preset on the digits, one epoch on 320 images (claim 5c needs 300)
    "smoke": LedgerProfile(
        "smoke", "digits", "smoke", dict(epochs=1, max_images=320, device="cpu"), (0, 1), None,
        collapse=dict(images=300, rounds=2, steps=5, clusters=10, lr=0.02, lam=10.0),
        timing=dict(sizes=(2000, 4000, 8000), k=50, ks=(25, 50, 100), n_k=4000, lam=10.0)),
    # the recorded ledger: notebook 03's run, the preset classroom-short (Fashion-MNIST, 4 heads of 10, 20,
    # 50, 100 clusters, lambda 10, 10 epochs and 40 label optimisations spaced quadratically, on 20,000
    # images) as it is: all claims x 3 seeds are estimated at about 2.5 hours of an idle 2-core CPU (the
    # plan and its figures: docs/ledger/README.md)
    "classroom": LedgerProfile(
        "classroom", "fashion-mnist", "classroom-short", {},
        (0, 1, 2), 20_000,
        collapse=dict(images=5000, rounds=3, steps=15, clusters=10, lr=0.02, lam=10.0),
        timing=dict(sizes=(25_000, 50_000, 100_000, 200_000), k=100, ks=(50, 100, 200, 400), n_k=50_000,
                    lam=10.0)),
}


def get_profile(name: str) -> LedgerProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown ledger profile {name!r}; choose one of {tuple(PROFILES)}")
    return PROFILES[name]


@dataclass(frozen=True)
class Setting:
    """What one claim compares, at every seed: ``kind`` of run, trainer ``overrides`` on top of the
    profile's, the training ``subset`` ("full", "light", "heavy"), and for a label transfer the
    ``source`` setting whose labels it learns."""

    name: str
    kind: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    subset: str = "full"
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"setting": self.name, "kind": self.kind, "overrides": dict(self.overrides), "subset": self.subset,
                "source": self.source}


def base_config(profile: LedgerProfile, **overrides):
    """The trainer config of the profile's plain SeLa run, with ``overrides``."""
    from sela_edu.training import config_from_preset

    return config_from_preset(profile.preset, dataset=profile.dataset, **{**profile.overrides, **overrides})


def setting_specs(profile: LedgerProfile) -> dict[str, Setting]:
    """Every setting the ledger's claims name, at this profile (see :data:`sela_edu.course.ledger.CLAIMS`)."""
    base = base_config(profile)
    c = profile.classes
    specs = [
        Setting("sela", "train"),
        Setting("kmeans", "train", {"method": "kmeans"}),
        Setting("sela-light", "train", subset="light"),
        Setting("sela-heavy", "train", subset="heavy"),
        Setting("kmeans-heavy", "train", {"method": "kmeans"}, subset="heavy"),
        Setting("nopts-0", "train", {"nopts": 0}),
        Setting("nopts-half", "train", {"nopts": max(1, base.nopts // 2)}),
        Setting("nopts-double", "train", {"nopts": base.nopts * 2}),
        Setting("k-classes", "train", {"num_heads": 1, "num_clusters": c}),
        Setting("k-over3", "train", {"num_heads": 1, "num_clusters": 3 * c}),
        Setting("k-over10", "train", {"num_heads": 1, "num_clusters": 10 * c}),
        Setting("k-over30", "train", {"num_heads": 1, "num_clusters": 30 * c}),
        Setting("heads-several", "train", {"num_heads": base.num_heads, "num_clusters": 3 * c}),
        Setting("transfer", "transfer", source="sela"),
        Setting("rot", "train", {"rotation": True}),
        Setting("collapse-argmax", "collapse", {"relabel": "argmax"}),
        Setting("collapse-sinkhorn", "collapse", {"relabel": "sinkhorn"}),
        Setting("timing", "timing"),
    ]
    return {s.name: s for s in specs}


@dataclass(frozen=True)
class Run:
    """One setting at one seed; its result file is ``<name>.json``."""

    setting: Setting
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting.name}_s{self.seed}"

    def identity(self, profile: LedgerProfile) -> dict[str, Any]:
        """What decides the run's result; a stored result must match it to be reused."""
        return {"profile": profile.name, "dataset": profile.dataset, "preset": profile.preset,
                "profile_overrides": dict(profile.overrides), "seed": self.seed, **self.setting.as_dict()}


def plan(profile: LedgerProfile, claims: Sequence[Claim] = CLAIMS) -> list[Run]:
    """The runs the ``claims`` need at every seed of the profile, each once, sources before the label
    transfers that read their labels."""
    specs = setting_specs(profile)
    names: list[str] = []
    for claim in claims:
        for name in claim.settings:
            if name == "timing-reference":      # measured by the timing run itself
                name = "timing"
            for needed in (specs[name].source, name):
                if needed and needed not in names:
                    names.append(needed)
    names.sort(key=lambda n: specs[n].kind == "transfer")
    return [Run(specs[n], seed) for n in names for seed in profile.seeds]


# --------------------------------------------------------------------------- storage

class LedgerFileError(ValueError):
    """A stored result that cannot be used (unreadable, partial, another format or another setting)."""


def result_path(folder: str | os.PathLike, run: Run) -> Path:
    return Path(folder) / f"{run.name}.json"


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    """Write ``result`` as JSON whole or not at all: a temporary file in the same folder, then
    ``os.replace`` (an interrupted write leaves no partial file under the run's name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


# --------------------------------------------------------------------------- running

#: runner(run, context) -> the run's measures (and anything else worth keeping), a JSON-able dict
Runner = Callable[[Run, Any], Mapping[str, Any]]


def run_ledger(profile: str | LedgerProfile = "smoke", folder: str | os.PathLike | None = None, *,
               only: Sequence[str] | None = None, runner: Runner | None = None, context: Any = None,
               progress: bool = True, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run what the claims ``only`` names (None: all) need at ``profile`` and is not yet in ``folder``;
    return every result the plan needs, keyed by run name.

    Each run's result is written to ``folder/<run>.json`` as soon as it ends, with the seconds it took,
    so an interrupted ledger resumes where it stopped. ``runner`` executes one run (default
    :func:`sela_edu.course.ledger_exec.execute_run`, with a :class:`~sela_edu.course.ledger_exec.LedgerContext`
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
        from sela_edu.course.ledger_exec import LedgerContext, execute_run

        runner, context = execute_run, context or LedgerContext(profile, folder)
    for run in tqdm(todo, desc="ledger", disable=not progress):
        t0 = time.perf_counter()
        produced = dict(runner(run, context))
        seconds = time.perf_counter() - t0
        result = {"format": RESULT_FORMAT, "name": run.name, "setting": run.setting.name, "seed": run.seed,
                  "run": run.identity(profile), "seconds": round(seconds, 2),
                  "measures": _finite(produced.pop("measures")), **produced}
        write_result(result_path(folder, run), result)
        results[run.name] = result
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


def seconds_by_setting(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Mean seconds per run of each setting (the planning figures of the recorded ledger)."""
    by: dict[str, list[float]] = {}
    for r in results.values():
        by.setdefault(r["setting"], []).append(r["seconds"])
    return {s: sum(v) / len(v) for s, v in by.items()}


__all__ = ["RESULT_FORMAT", "LedgerProfile", "PROFILES", "get_profile", "Setting", "base_config",
           "setting_specs", "Run", "plan", "LedgerFileError", "result_path", "write_result", "read_result",
           "read_results", "run_ledger", "total_seconds", "seconds_by_setting"]

