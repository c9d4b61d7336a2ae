"""Availability of a data set under the data root, and its download with a short timeout (never held up offline)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sela_edu.data.datasets import canonical_name
from sela_edu.settings import data_root

#: Data sets torchvision can download, with the host its first mirror is on (checked before downloading).
DOWNLOAD_HOSTS: dict[str, tuple[str, int]] = {
    "fashion-mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "cifar100": ("www.cs.toronto.edu", 443),
    "svhn": ("ufldl.stanford.edu", 80),
}
#: Seconds to wait for a download host before giving up (an offline machine is not held up).
DOWNLOAD_TIMEOUT = 4.0


def _expected_file(key: str, base: Path) -> Path | None:
    return {
        "digits": None,  # ships with scikit-learn
        "fashion-mnist": base / "FashionMNIST" / "raw" / "train-images-idx3-ubyte",
        "cifar10": base / "cifar-10-batches-py" / "data_batch_1",
        "cifar100": base / "cifar-100-python" / "train",
        "svhn": base / "svhn" / "train_32x32.mat",
        "imagenet": base / "imagenet" / "train",
    }.get(key, None)


def available(name: str, root: str | os.PathLike | None = None) -> bool:
    """Whether ``load_dataset(name, root=root)`` would find its files: a cheap look at the paths this
    module reads (it does not open them). Digits are always available; ``"folder"`` when ``root`` is
    a folder."""
    key = canonical_name(name)
    if key == "folder":
        return root is not None and Path(root).expanduser().is_dir()
    base = Path(root).expanduser() if root else data_root()
    path = _expected_file(key, base)
    if path is None:
        return True
    if key == "fashion-mnist":
        raw = path.parent
        return all((raw / f"{p}-{k}-ubyte").is_file() for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
    return path.exists()


def how_to_get(name: str) -> str:
    """One sentence on fetching a data set by hand."""
    key = canonical_name(name)
    if key == "imagenet":
        return ("ImageNet (ILSVRC-2012) cannot be downloaded automatically: get it from https://image-net.org "
                "and arrange <data root>/imagenet/train/<class>/<images> and .../val/<class>/<images>.")
    return (f"On a machine with internet, `python -c \"from sela_edu.data import ensure_dataset; "
            f"ensure_dataset('{key}')\"` downloads it into the data root ($SELA_DATA_ROOT, default data/); "
            f"or copy the files there.")


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included)."""
    import socket
    import threading

    result: dict[str, bool] = {}

    def _try() -> None:  # getaddrinfo ignores socket timeouts: run it where we can stop waiting
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    worker = threading.Thread(target=_try, daemon=True)
    worker.start()
    worker.join(timeout)
    return result.get("ok", False)


def _download(key: str, base: Path, timeout: float) -> None:
    """Let torchvision download ``key`` into ``base`` (its progress bar shows), every socket operation
    limited to ``timeout`` seconds."""
    import socket

    from torchvision import datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        if key == "fashion-mnist":
            datasets.FashionMNIST(root=str(base), train=True, download=True)
            datasets.FashionMNIST(root=str(base), train=False, download=True)
        elif key in ("cifar10", "cifar100"):
            cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
            cls(root=str(base), train=True, download=True)
        elif key == "svhn":
            for split in ("train", "test"):
                datasets.SVHN(root=str(base / "svhn"), split=split, download=True)
        else:  # pragma: no cover - guarded by the caller
            raise ValueError(f"{key} cannot be downloaded automatically")
    finally:
        socket.setdefaulttimeout(previous)


def ensure_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool | None = None,
                   timeout: float | None = None, log: Callable[[str], None] | None = print) -> bool:
    """Make a data set available under the data root; return whether it is.

    Files already there: True at once. Otherwise, for a data set torchvision can fetch (Fashion-MNIST
    is about 30 MB) and unless ``download`` is False or ``$SELA_OFFLINE`` is set: check within
    ``timeout`` seconds (default :data:`DOWNLOAD_TIMEOUT`) that the download host answers, then let
    torchvision download it with its progress bar, each network operation limited to the same timeout.
    Any failure is reported through ``log`` and gives False, quickly; nothing is raised.
    """
    from sela_edu.settings import offline

    key = canonical_name(name)
    base = Path(root).expanduser() if root else data_root()
    if available(key, base):
        return True
    if download is None:
        download = not offline()
    if not download or key not in DOWNLOAD_HOSTS:
        return False
    wait = DOWNLOAD_TIMEOUT if timeout is None else float(timeout)
    host, port = DOWNLOAD_HOSTS[key]
    say = log or (lambda message: None)
    if not _reachable(host, port, wait):
        say(f"{key}: the download server ({host}) did not answer within {wait:g} s (offline?)")
        return False
    say(f"{key}: downloading into the data root ({base}) ...")
    try:
        base.mkdir(parents=True, exist_ok=True)
        _download(key, base, wait)
    except Exception as exc:  # network errors, timeouts, a full disk: all mean "not available"
        say(f"{key}: the download failed ({type(exc).__name__}: {str(exc)[:160]})")
        return False
    return available(key, base)
