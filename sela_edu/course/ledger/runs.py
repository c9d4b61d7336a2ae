"""The ledger's runs as data (stored and run by :mod:`.store`).

A *setting* is what a claim compares (``"sela"``, ``"kmeans-heavy"``, ``"k-over3"``, ...): a kind of run
(train, label transfer, the collapse loop, the label-step timings), a trainer preset with overrides,
and a training subset. A *run* is a setting at one seed, named ``<setting>_s<seed>``. The settings of a
profile (:data:`PROFILES`: ``smoke`` for tests and the notebook's smoke run, ``classroom`` for the
recorded ledger, ``gpu`` for the full classroom preset over five seeds on one GPU) are built by :func:`setting_specs`; what each kind measures is in
:mod:`sela_edu.course.ledger.execute`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sela_edu.course.ledger.claims import CLAIMS, Claim

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
    # the ledger on one GPU (``sela-edu ledger --profile gpu``): the same claims at the full classroom
    # preset as it is (all 60,000 Fashion-MNIST images, 20 epochs, 40 label optimisations), trained on
    # "cuda", over five seeds, so that rows "within the spread" at the short CPU schedule can separate.
    # 18 settings x 5 seeds = 90 runs, 75 of them trainings; sized for about 15 minutes of one H200 once
    # the classroom preset trains in at most 10 s (issue 26's target; 67 s when last measured, so about
    # 1.5 hours until then). The evaluation (kNN memory and probe on all 60,000 training images), the
    # collapse loop and the label-step timings run on the CPU as at classroom. Not yet run: no GPU here.
    "gpu": LedgerProfile(
        "gpu", "fashion-mnist", "classroom", dict(device="cuda"),
        (0, 1, 2, 3, 4), None,
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
    """Every setting the ledger's claims name, at this profile (see :data:`sela_edu.course.ledger.claims.CLAIMS`)."""
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
        *successor_settings(profile),
    ]
    return {s.name: s for s in specs}


def successor_settings(profile: LedgerProfile) -> list[Setting]:
    """SeLa's successors (claims 10-14) on the profile's schedule: each method's part of its classroom preset
    (projection head, prototypes, temperature, multi-crop), the small crops scaled to the data set's images
    (16 px of Fashion-MNIST's 28); ``sela-v2-2crops`` without the small crops (SwAV's "2 x 224" rows)."""
    from sela_edu.data.datasets import DATASET_INFO, canonical_name
    from sela_edu.training.presets import PRESETS

    side = DATASET_INFO[canonical_name(profile.dataset)]["image_size"]
    settings = []
    for method in ("sela-v2", "deepcluster-v2", "swav"):
        preset, classroom = PRESETS[f"{method}-classroom"], PRESETS["classroom"]
        parts = {k: v for k, v in preset.items() if classroom.get(k) != v}
        parts["small_crop_size"] = max(4, round(side * parts["small_crop_size"] / classroom_side()))
        settings.append(Setting(method, "train", parts))
        if method == "sela-v2":
            settings.append(Setting("sela-v2-2crops", "train", {**parts, "small_crops": 0}))
    return settings


def classroom_side() -> int:
    """The side of the classroom's images (Fashion-MNIST, 28 px), which the successor presets' crops are sized to."""
    from sela_edu.data.datasets import DATASET_INFO, canonical_name
    from sela_edu.training.presets import PRESETS

    return DATASET_INFO[canonical_name(PRESETS["classroom"]["dataset"])]["image_size"]


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


__all__ = ["RESULT_FORMAT", "LedgerProfile", "PROFILES", "get_profile", "Setting", "base_config",
           "setting_specs", "Run", "plan"]
