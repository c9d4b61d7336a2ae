"""What a notebook calls around the science: profiles, configurations, folders, clean stops, widgets.

* :func:`resolve_config` turns a notebook's ``profile`` parameter (``"smoke"``, ``"classroom"``,
  ``"paper"``) plus single overrides into a trainer :class:`~sela_edu.training.TrainConfig`.
* :func:`pick` keeps a notebook's per-profile sizes on one line.
* :func:`stop_here` ends a notebook cleanly when its data is absent: the rest of the cells still "run"
  (so papermill reports success) but do nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from sela_edu import settings

PROFILES = ("smoke", "classroom", "paper")

#: env var that tells notebooks to draw static figures instead of widgets (set by the runners here)
STATIC_ENV = "SELA_STATIC_FIGURES"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    return profile


def preset_for(profile: str, paper_preset: str = "cifar-paper", classroom_preset: str = "classroom") -> str:
    """The trainer preset behind a profile: smoke -> "smoke", classroom -> ``classroom_preset``
    ("classroom", or a notebook's shortened run of it: "classroom-short", "classroom-imbalance"),
    paper -> ``paper_preset`` ("cifar-paper" or "imagenet-paper")."""
    check_profile(profile)
    return {"smoke": "smoke", "classroom": classroom_preset, "paper": paper_preset}[profile]


def resolve_config(profile: str, *, paper_preset: str = "cifar-paper", classroom_preset: str = "classroom",
                   **overrides):
    """``training.config_from_preset(preset_for(profile, ...), **overrides)``, ignoring overrides that
    are ``None`` (a notebook parameter left at its default). A notebook names its presets here rather
    than editing the config, so that every setting it runs is a preset (``sela-edu presets``)."""
    from sela_edu.training import config_from_preset

    given = {k: v for k, v in overrides.items() if v is not None}
    return config_from_preset(preset_for(profile, paper_preset, classroom_preset), **given)


def pick(profile: str, *, smoke, classroom, paper=None):
    """The value for this profile (``paper`` defaults to ``classroom``)."""
    check_profile(profile)
    return {"smoke": smoke, "classroom": classroom, "paper": classroom if paper is None else paper}[profile]


def arch_for(dataset: str, arch: str | None = None) -> str | None:
    """``arch`` if given; the small CNN for the tiny grey data sets (digits' 8 px is below AlexNet's
    minimum); else None (the preset decides)."""
    if arch:
        return arch
    return "smallcnn" if dataset in ("digits", "fashion-mnist") else None


def output_folder(output_dir: str | os.PathLike | None = None) -> Path:
    """The folder a notebook writes results into: ``output_dir`` if given, else ``settings.results_dir()``."""
    path = Path(output_dir).expanduser() if output_dir else settings.results_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_folder(config, output_dir: str | os.PathLike | None = None, tag: str = "") -> Path:
    """A checkpoint folder named after what decides a run's result, so that notebooks sharing an output
    folder share runs (06 reuses the SeLa run of 03, and re-running a notebook resumes instead of
    recomputing) and two different runs never share one: the readable part names the method, data set and
    sizes, and a short hash covers every other field that changes what is trained (all but
    ``RESUMABLE_CHANGES``), so changing, say, ``nopts`` in a notebook trains afresh."""
    from sela_edu.training.config import ADDED_FIELDS, RESUMABLE_CHANGES, TrainConfig

    ks = "-".join(str(k) for k in config.cluster_list())
    defaults = TrainConfig().to_dict()
    # a field added later counts only away from its default: older runs keep their folder
    trained = {k: v for k, v in config.to_dict().items()
               if k not in RESUMABLE_CHANGES and not (k in ADDED_FIELDS and v == defaults[k])}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = (f"{tag + '_' if tag else ''}{config.method}_{config.dataset}_{config.arch}_h{config.num_heads}_k{ks}"
            f"_lam{config.lam:g}_e{config.epochs}_n{config.max_images or 'all'}_s{config.seed}_{digest}")
    return output_folder(output_dir) / "checkpoints" / re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


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


__all__ = ["PROFILES", "STATIC_ENV", "check_profile", "preset_for", "resolve_config", "pick", "arch_for",
           "output_folder", "checkpoint_folder", "NotebookStopped", "stop_here", "resume", "widgets_enabled"]
