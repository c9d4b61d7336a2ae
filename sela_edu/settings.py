"""Run-wide settings read from the environment: where data, figures and results live, and which device to use.

Every path the kit uses comes from here, so a notebook, a test and the command line agree on them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """The folder the kit's default paths hang from: the kit's checkout when it runs from one (a clone or
    an editable install: ``REPO_ROOT`` holds ``pyproject.toml`` and ``notebooks/``), else the working
    directory, so that a ``pip install`` never writes into site-packages."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "notebooks").is_dir():
        return REPO_ROOT
    return Path.cwd()


#: Environment variable naming the folder that holds (or receives) the data sets.
DATA_ROOT_ENV = "SELA_DATA_ROOT"
#: Environment variables for the output folders.
FIGURES_ENV = "SELA_FIGURES_DIR"
RESULTS_ENV = "SELA_RESULTS_DIR"
#: Environment variable that turns on torch's deterministic algorithms ("1", "true", "yes") in
#: :func:`seed_everything`: bit-for-bit repeatable runs on one machine, at some cost in speed.
DETERMINISTIC_ENV = "SELA_DETERMINISTIC"
#: Environment variable that forbids downloads ("1", "true", "yes"): data sets come from the data root or
#: not at all (the CPU notebooks then use the digits). The test suite sets it.
OFFLINE_ENV = "SELA_OFFLINE"


def data_root() -> Path:
    """The data folder: ``$SELA_DATA_ROOT`` if set, else ``data/`` under :func:`home`."""
    return Path(os.environ.get(DATA_ROOT_ENV) or home() / "data").expanduser()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """Whether downloads are forbidden (``$SELA_OFFLINE`` set to 1, true or yes)."""
    return _flag(OFFLINE_ENV)


def figures_dir() -> Path:
    """Where figures are written (``$SELA_FIGURES_DIR``, default ``<results_dir>/figures``); created on
    demand. The committed ``figures/`` are written only by ``sela-edu refresh`` (and ``make demo-solver``),
    which name them explicitly, so interactive runs never overwrite them."""
    path = Path(os.environ.get(FIGURES_ENV) or results_dir() / "figures").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Where executed notebooks, checkpoints and tables go (``$SELA_RESULTS_DIR``, default ``results/``
    under :func:`home`)."""
    path = Path(os.environ.get(RESULTS_ENV) or home() / "results").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """``"auto"`` gives the GPU when there is one, else the CPU; anything else is taken as a device name."""
    import torch  # here, not at the top: the command line reads these settings and should start at once

    if isinstance(preference, torch.device):
        return preference
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was asked for, but torch sees no CUDA GPU on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU) in one call; with ``$SELA_DETERMINISTIC`` set, also
    make torch use only deterministic algorithms (cuBLAS then needs its workspace setting, given here)."""
    import numpy as np
    import torch

    if _flag(DETERMINISTIC_ENV):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
