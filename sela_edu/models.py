"""Backbones with several linear heads, one per clustering (SeLa's "multi-head" networks).

Every model is a :class:`MultiHeadNet`: a backbone that maps an image to a ``feature_dim`` vector and
``h`` linear heads that map that vector to K cluster scores each. The heads share the backbone, so
training on ten clusterings at once costs little more than on one.

Architectures (``ARCHS``):

``"alexnet"``
    SeLa's AlexNet with BatchNorm after every convolution, conv widths 96-256-384-384-256, for 224 px
    images (conv 11x11/4 -> pool -> conv 5x5 -> pool -> three conv 3x3 -> pool -> 256 x 6 x 6). The
    fully connected part follows the official code: dropout 0.5, Linear(9216, 4096), ReLU, dropout 0.5,
    Linear(4096, 4096), ReLU; the heads and the kNN/linear-probe features sit on those 4096 numbers.
    (The official CIFAR recipe upsamples 32 px images to 224 px and uses this network.)
``"alexnet32"``
    The same widths for 32 px input without upsampling: the 11x11/4 first conv becomes 3x3/1 and every
    max-pool keeps AlexNet's 3/2 shape (with padding 1), so the conv maps are 32 -> 16 -> 8 -> 4 where
    AlexNet has 55 -> 27 -> 13 -> 6; the fc layers see 256 x 4 x 4 = 4096 numbers. About 0.4 G
    multiply-adds per image (a third of the 224 px AlexNet's 1.1 G): a GPU network, not a CPU one.
``"resnet18"``, ``"resnet50"``
    torchvision's ResNets (``weights=None``) without their ``fc`` layer (features 512 / 2048 after
    global average pooling). ``small_stem=True`` (the default when ``image_size <= 64``) swaps the
    7x7/2 conv and the max-pool for one 3x3/1 conv, the usual CIFAR stem.
``"smallcnn"``
    A cheap network for training on a laptop CPU in minutes: three conv blocks (32-64-128 channels,
    3x3, BatchNorm, ReLU) with early stride 2 where the image is big enough, global average pooling and
    a Linear(128, 256) + BatchNorm + ReLU feature layer (256-d). Works from 8 px (scikit-learn digits)
    to 28 px (Fashion-MNIST) and beyond; about 4.6 M multiply-adds per 28 px image.
``"feature-mlp"``
    Heads on a frozen backbone's feature vectors (``sela-edu label --backbone``): its input is an
    N x ``in_features`` batch of standardised features (:class:`~sela_edu.data.features.FeatureData`),
    not images, and its "backbone" one hidden layer, Linear(in_features, 512) + BatchNorm + ReLU, so
    that the heads can draw non-linear cluster boundaries in the frozen feature space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("smallcnn", "alexnet", "alexnet32", "resnet18", "resnet50", "feature-mlp")
#: The architectures that read feature vectors (N x D) instead of images.
FEATURE_ARCHS = ("feature-mlp",)
#: Width of feature-mlp's hidden layer (what its heads read).
FEATURE_MLP_HIDDEN = 512

#: Smallest image side each architecture accepts: below it the last conv stage has no real pixels
#: left (alexnet: its 11x11/4 conv and three 3/2 pools need 63 px to leave a 1 x 1 map).
MIN_IMAGE_SIZE = {"smallcnn": 8, "alexnet": 63, "alexnet32": 16, "resnet18": 32, "resnet50": 32}
#: With the 3x3/1 CIFAR stem a ResNet downsamples 8x instead of 32x.
MIN_IMAGE_SIZE_SMALL_STEM = 8

#: One K for every head (an int or ``"10"``) or one K per head (a list, or ``"10,20,50"``): see :func:`clusters_per_head`.
ClusterSpec = int | Sequence[int] | str


class MultiHeadNet(nn.Module):
    """A backbone shared by ``num_heads`` linear heads.

    Attributes:
        backbone: maps a batch of images to a ``N x feature_dim`` tensor.
        heads: one ``nn.Linear(feature_dim, K_j)`` per head.
        head_temperature: None for plain linear heads (the paper's); a number T for cosine heads, whose
            scores are the cosine between the feature and each cluster's weight vector, divided by T
            (SwAV's prototypes; the bias is not used).
        projection: None, or the MLP between the features and the heads of SwAV and its kin (Linear,
            BatchNorm, ReLU, Linear to ``projection_dim``): the heads then read its L2-normalised output,
            :meth:`embedding` (cosine heads only).
        feature_dim: width of the feature vector (what kNN and the linear probe evaluate).
        arch, in_channels, image_size: how the model was built (``build_kwargs`` rebuilds it).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_heads: int = 1,
                 num_clusters: ClusterSpec = 10, *, build_kwargs: dict | None = None,
                 head_temperature: float | None = None, projection_dim: int | None = None,
                 projection_hidden: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.build_kwargs = dict(build_kwargs or {})
        self.head_temperature = check_head_temperature(head_temperature)
        if head_temperature is not None:
            self.build_kwargs["head_temperature"] = float(head_temperature)
        self.projection: nn.Module | None = None
        self.head_dim = self.feature_dim
        if projection_dim is not None:
            if self.head_temperature is None:
                raise ValueError("a projection head feeds cosine heads (SwAV's prototypes): set head_temperature")
            self.projection = _projection(self.feature_dim, projection_hidden or self.feature_dim, projection_dim)
            self.head_dim = int(projection_dim)
            self.build_kwargs.update(projection_dim=int(projection_dim),
                                     projection_hidden=int(projection_hidden or self.feature_dim))
        self.heads = nn.ModuleList()
        self.rotation_head: nn.Linear | None = None
        self.reset_heads(num_heads, num_clusters)

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    @property
    def num_clusters(self) -> list[int]:
        """K of every head, in order."""
        return [head.out_features for head in self.heads]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``N x feature_dim`` representation (input of the heads)."""
        return self.backbone(x)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional stage, flattened: the backbone up to its first fully connected layer.

        The paper's linear probes read this layer (conv5 of AlexNet); kNN reads :meth:`features` (fc).
        For a backbone without fully connected layers (the ResNets) it equals :meth:`features`.
        """
        if not isinstance(self.backbone, nn.Sequential):
            return self.features(x).flatten(1)
        for layer in self.backbone:
            if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Sequential) and isinstance(layer[0], (nn.Dropout, nn.Linear))):
                break
            x = layer(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor, rotation: bool = False, embedding: bool = False):
        """One ``N x K_j`` score tensor (logits, before softmax) per head; with ``rotation=True`` the
        logits of the rotation head (:meth:`add_rotation_head`) follow as the last entry. With
        ``embedding=True``: the pair (that list, :meth:`embedding` of the batch)."""
        feats = self.features(x)
        if embedding:
            unit = self.embedding(feats)
            return self.head_scores(unit, unit=True), unit
        out = self.head_scores(feats)
        if rotation:
            if self.rotation_head is None:
                raise ValueError("this model has no rotation head: call add_rotation_head() first")
            out.append(self.rotation_head(feats))
        return out

    def embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """The L2-normalised vector the cosine heads read: the projection of ``feats`` (or ``feats``)."""
        feats = feats.flatten(1)
        return F.normalize(self.projection(feats) if self.projection is not None else feats, dim=1)

    def head_scores(self, feats: torch.Tensor, unit: bool = False) -> list[torch.Tensor]:
        """Every head's scores for a batch of :meth:`features` (``unit=True``: of :meth:`embedding`)."""
        if self.head_temperature is None:
            return [head(feats) for head in self.heads]
        if not unit:
            feats = self.embedding(feats)
        return [F.linear(feats, self.prototypes(h)) / self.head_temperature for h in range(len(self.heads))]

    def prototypes(self, head: int) -> torch.Tensor:
        """Head ``head``'s K x d unit weight vectors (cosine heads): SwAV's prototypes."""
        return F.normalize(self.heads[head].weight, dim=1)

    def add_rotation_head(self) -> None:
        """Add the 4-way rotation classifier of SeLa + Rot (0, 90, 180 or 270 degrees), beside the heads."""
        ref = next(self.backbone.parameters(), None)
        head = nn.Linear(self.feature_dim, 4)
        if ref is not None:
            head = head.to(device=ref.device, dtype=ref.dtype)
        self.rotation_head = head
        self.build_kwargs["rotation"] = True

    def reset_heads(self, num_heads: int, num_clusters: ClusterSpec) -> None:
        """Replace the heads by ``num_heads`` freshly initialised ones (same device and dtype as the
        backbone). ``num_clusters``: one K for every head or one K per head (:func:`clusters_per_head`)."""
        ks = clusters_per_head(num_clusters, num_heads)
        ref = next(self.backbone.parameters(), None)
        heads = []
        for k in ks:
            head = nn.Linear(self.head_dim, k)
            init_head(head)
            if self.head_temperature is not None:  # cosine heads read no bias: nothing for SGD or DDP to wait on
                head.bias.requires_grad_(False)
            if ref is not None:
                head = head.to(device=ref.device, dtype=ref.dtype)
            heads.append(head)
        self.heads = nn.ModuleList(heads)
        self.build_kwargs.update(num_heads=len(ks), num_clusters=ks if len(set(ks)) > 1 else ks[0])

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, num_heads={self.num_heads}, num_clusters={self.num_clusters}"


def _projection(features: int, hidden: int, out: int) -> nn.Sequential:
    """SwAV's projection head: Linear, BatchNorm, ReLU, Linear (hidden 2048, out 128 for a ResNet-50)."""
    for name, value in (("projection_hidden", hidden), ("projection_dim", out)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class FlattenAt(nn.Flatten):
    """Flatten a map of ``side`` x ``side``; another side (a multi-crop's small crop) is first average-pooled
    to it, so that one fully connected layer reads every crop size. No parameters: a drop-in for Flatten."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = int(side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and tuple(x.shape[-2:]) != (self.side, self.side):
            x = F.adaptive_avg_pool2d(x, self.side)
        return super().forward(x)


def check_head_temperature(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"head_temperature must be None or a positive number, got {value!r}")
    return float(value)


def clusters_per_head(clusters: ClusterSpec, heads: int | None = None) -> list[int]:
    """K of every head, as a list: the kit's one rule for "K per head" (models, config, CLI, label a folder).

    ``clusters`` is one K for every head (an int, a one-element list, or ``"10"``) or one K per head (a
    list, or a comma-separated string ``"10,20,50"``). ``heads`` is the number of heads; None: one per K
    given. Raises ValueError naming the problem: a count that matches neither rule, a K below 2, a word.
    """
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1):
        raise ValueError(f"num_heads must be a positive integer, got {heads!r}")
    if isinstance(clusters, str):
        ks = _parse_cluster_text(clusters)
    elif isinstance(clusters, (int, np.integer)) and not isinstance(clusters, bool):
        ks = [clusters]
    elif isinstance(clusters, Sequence):
        ks = list(clusters)
    else:
        raise ValueError(f"num_clusters must be an int or a list of ints, got {clusters!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise ValueError(f"every number of clusters must be an integer >= 2, got {clusters!r}")
    if heads is not None and len(ks) == 1:
        ks = ks * int(heads)
    if not ks or (heads is not None and len(ks) != heads):
        raise ValueError(f"num_clusters lists {len(ks)} values ({clusters!r}) but num_heads is {heads}: "
                         "give one K for every head, or one K per head")
    return [int(k) for k in ks]


def _parse_cluster_text(text: str) -> list:
    """"10,20,50" -> [10, 20, 50]; a word that is not a whole number stays as it is, for the error."""
    words = [w for w in text.replace(" ", "").split(",") if w]
    return [int(w) if w.isdigit() else w for w in words]


def init_head(head: nn.Linear) -> None:
    """A head's weights as the official code starts them, in place: small (N(0, 0.01)) with zero bias, so
    that every head starts near the uniform distribution and the first labels come from the
    equipartition, not from the initialisation. Used at build time and when heads start afresh."""
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)


def unwrap(model: nn.Module) -> nn.Module:
    """The kit's model out of its DistributedDataParallel wrapper when it has one (scoring, evaluating
    and re-initialising heads need the network itself, not the gradient synchronisation)."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def _init_conv_bn(module: nn.Module) -> None:
    # He initialisation for ReLU networks (as the official AlexNet), BN at identity, small fc weights.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _alexnet_fc(in_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(in_features, 4096), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True))


def _alexnet(in_channels: int) -> tuple[nn.Module, int]:
    convs = nn.Sequential(
        *_conv_bn_relu(in_channels, 96, 11, stride=4, padding=2), nn.MaxPool2d(3, 2),
        *_conv_bn_relu(96, 256, 5, padding=2), nn.MaxPool2d(3, 2),
        *_conv_bn_relu(256, 384, 3, padding=1),
        *_conv_bn_relu(384, 384, 3, padding=1),
        *_conv_bn_relu(384, 256, 3, padding=1), nn.MaxPool2d(3, 2),
        # Identity at 224 px (the map is already 6 x 6); lets other sizes reach the same fc layer,
        # as torchvision's AlexNet does.
        nn.AdaptiveAvgPool2d(6),
    )
    backbone = nn.Sequential(convs, nn.Flatten(), _alexnet_fc(256 * 6 * 6))
    return backbone, 4096


def _alexnet32(in_channels: int) -> tuple[nn.Module, int]:
    convs = nn.Sequential(
        *_conv_bn_relu(in_channels, 96, 3, padding=1), nn.MaxPool2d(3, 2, padding=1),
        *_conv_bn_relu(96, 256, 5, padding=2), nn.MaxPool2d(3, 2, padding=1),
        *_conv_bn_relu(256, 384, 3, padding=1),
        *_conv_bn_relu(384, 384, 3, padding=1),
        *_conv_bn_relu(384, 256, 3, padding=1), nn.MaxPool2d(3, 2, padding=1),
        nn.AdaptiveAvgPool2d(4),  # identity at 32 px
    )
    backbone = nn.Sequential(convs, nn.Flatten(), _alexnet_fc(256 * 4 * 4))
    return backbone, 4096


def _smallcnn(in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    # Stride 2 wherever there are pixels to spare (28 -> 14 -> 7 -> 4; most of the cost sits in the first,
    # widest maps), at least 4 x 4 at the end so 8 px digits keep spatial structure, and the last map
    # flattened rather than averaged: where things are matters for clothes and digits (on Fashion-MNIST
    # flattening gave +2 points of kNN and +3 of linear probe over global average pooling).
    strides = (2 if image_size >= 16 else 1, 2, 2 if image_size >= 16 else 1)
    side = image_size
    for stride in strides:
        side = (side - 1) // stride + 1
    backbone = nn.Sequential(
        *_conv_bn_relu(in_channels, 32, 3, stride=strides[0], padding=1),
        *_conv_bn_relu(32, 64, 3, stride=strides[1], padding=1),
        *_conv_bn_relu(64, 128, 3, stride=strides[2], padding=1),
        FlattenAt(side),
        nn.Linear(128 * side * side, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
    )
    return backbone, 256


def _feature_mlp(in_features: int) -> tuple[nn.Module, int]:
    # PyTorch's default Linear init, not _init_conv_bn's small weights: the BatchNorm after it makes the
    # output scale-free, and small weights would only make its gradients (and so its steps) large.
    return nn.Sequential(nn.Linear(in_features, FEATURE_MLP_HIDDEN), nn.BatchNorm1d(FEATURE_MLP_HIDDEN),
                         nn.ReLU(inplace=True)), FEATURE_MLP_HIDDEN


def _build_feature_model(arch: str, num_heads: int, num_clusters: ClusterSpec, in_features, small_stem,
                         rotation: bool, head_temperature: float | None, projection: dict) -> MultiHeadNet:
    """build_model for the architectures that read feature vectors (``FEATURE_ARCHS``)."""
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(f"{arch!r} reads feature vectors: in_features must be their length, a positive "
                         f"integer, got {in_features!r}")
    if small_stem:
        raise ValueError(f"small_stem applies to the ResNets only, not to {arch!r}")
    if rotation:
        raise ValueError(f"{arch!r} reads feature vectors, which cannot be rotated: no rotation head")
    clusters_per_head(num_clusters, num_heads)
    check_head_temperature(head_temperature)
    backbone, dim = _feature_mlp(in_features)
    model = MultiHeadNet(backbone, dim, num_heads, num_clusters, build_kwargs=dict(arch=arch, in_features=in_features),
                         head_temperature=head_temperature, **projection)
    model.arch, model.in_channels, model.image_size = arch, None, None
    return model


def _resnet(arch: str, in_channels: int, small_stem: bool) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    if small_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if small_stem or in_channels != 3:
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def build_model(arch: str, *, num_heads: int = 1, num_clusters: ClusterSpec = 10, in_channels: int = 3,
                image_size: int = 32, small_stem: bool | None = None, rotation: bool = False,
                head_temperature: float | None = None, in_features: int | None = None,
                projection_dim: int | None = None, projection_hidden: int | None = None) -> MultiHeadNet:
    """Build a :class:`MultiHeadNet` with ``num_heads`` heads of ``num_clusters`` clusters.

    Args:
        arch: one of ``ARCHS``.
        num_heads: number of heads (independent clusterings sharing the backbone).
        num_clusters: K for every head, or one K per head (:func:`clusters_per_head`).
        in_channels: 1 for grey images, 3 for colour.
        image_size: side of the (square) input in pixels; decides strides (smallcnn), the ResNet stem,
            and is checked against the architecture's minimum (``MIN_IMAGE_SIZE``).
        small_stem: ResNets only: 3x3/1 first conv without max-pool; default ``image_size <= 64``.
        rotation: also a 4-way rotation head (SeLa + Rot, see :meth:`MultiHeadNet.add_rotation_head`).
        head_temperature: None for linear heads; T for cosine heads (see :class:`MultiHeadNet`).
        in_features: ``FEATURE_ARCHS`` only, and required there: the length of the feature vectors they
            read (``in_channels`` and ``image_size`` are then unused).
        projection_dim, projection_hidden: a projection head between features and (cosine) heads, of
            this output width and hidden width (default: the feature width); see :class:`MultiHeadNet`.

    Raises:
        ValueError: unknown ``arch``, an image too small for it, ``small_stem=True`` for a non-ResNet,
            ``in_features`` missing for a feature architecture or given for an image one, or bad
            head/channel numbers.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    projection = dict(projection_dim=projection_dim, projection_hidden=projection_hidden)
    if arch in FEATURE_ARCHS:
        return _build_feature_model(arch, num_heads, num_clusters, in_features, small_stem, rotation,
                                    head_temperature, projection)
    if in_features is not None:
        raise ValueError(f"in_features is for the architectures that read feature vectors {FEATURE_ARCHS}; "
                         f"{arch!r} reads images (in_channels, image_size)")
    for name, value in (("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    is_resnet = arch.startswith("resnet")
    if small_stem and not is_resnet:
        raise ValueError(f"small_stem applies to the ResNets only, not to {arch!r}")
    if is_resnet and small_stem is None:
        small_stem = image_size <= 64
    min_size = MIN_IMAGE_SIZE_SMALL_STEM if (is_resnet and small_stem) else MIN_IMAGE_SIZE[arch]
    if image_size < min_size:
        stem = " with the small stem" if (is_resnet and small_stem) else ""
        hint = {"alexnet": "; for 32 px images use 'alexnet32'",
                "alexnet32": "; for tiny images use 'smallcnn'"}.get(arch, "")
        raise ValueError(f"image_size {image_size} px is too small for {arch!r}{stem}: it needs at least "
                         f"{min_size} px{hint}")
    clusters_per_head(num_clusters, num_heads)  # validate before building anything large
    check_head_temperature(head_temperature)

    if arch == "alexnet":
        backbone, dim = _alexnet(in_channels)
    elif arch == "alexnet32":
        backbone, dim = _alexnet32(in_channels)
    elif arch == "smallcnn":
        backbone, dim = _smallcnn(in_channels, image_size)
    else:
        backbone, dim = _resnet(arch, in_channels, bool(small_stem))
    if not is_resnet:  # torchvision already initialises its ResNets
        _init_conv_bn(backbone)

    kwargs = dict(arch=arch, in_channels=in_channels, image_size=image_size,
                  small_stem=bool(small_stem) if is_resnet else None)
    model = MultiHeadNet(backbone, dim, num_heads, num_clusters, build_kwargs=kwargs,
                         head_temperature=head_temperature, **projection)
    model.arch, model.in_channels, model.image_size = arch, in_channels, image_size
    if rotation:
        model.add_rotation_head()
    return model


__all__ = ["ARCHS", "FEATURE_ARCHS", "MIN_IMAGE_SIZE", "MultiHeadNet", "build_model", "clusters_per_head",
           "init_head", "unwrap"]
