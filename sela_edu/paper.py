"""The paper's figures and the official code's, as data, in one place: what the notebooks print beside
their own numbers, what the ledger's claims and figures cite, and what the authors' models are checked
against. Read from the paper's tables, the official repository's README and its ``cifar.py`` (and, for
the SeLa-v2, DeepCluster-v2 and SwAV checkpoints, the facebookresearch/swav README); a figure that could
not be read is None. Imports nothing, so every part of the kit may read it.
"""

from __future__ import annotations

#: Headline figures, keyed as notebooks record their measured values (``course.record_result``).
RESULTS: dict[str, tuple[float, str]] = {
    "cifar10_knn": (77.6, "CIFAR-10, AlexNet, weighted kNN (%)"),
    "cifar10_linear": (83.4, "CIFAR-10, AlexNet, linear probe (%)"),
    "cifar100_knn": (44.2, "CIFAR-100, AlexNet, weighted kNN (%)"),
    "cifar100_linear": (57.4, "CIFAR-100, AlexNet, linear probe (%)"),
    "svhn_knn": (92.8, "SVHN, AlexNet, weighted kNN (%)"),
    "svhn_linear": (94.5, "SVHN, AlexNet, linear probe (%)"),
    "svhn_supervised": (96.1, "SVHN, supervised (%)"),
    "svhn_and": (93.7, "SVHN, previous best AND (%)"),
    "imagenet_resnet50_linear": (61.5, "ImageNet, ResNet-50 10x3k, linear top-1 (%)"),
    "imagenet_resnet50_nmi": (54.2, "ImageNet val, ResNet-50 10x3k, NMI (%)"),
    "imagenet_alexnet_linear_1k": (42.1, "ImageNet, AlexNet 1k clusters, linear (%)"),
    "imagenet_alexnet_linear_10k": (43.8, "ImageNet, AlexNet 10k clusters, linear (%)"),
    "label_transfer_alexnet_from_resnet50": (48.4, "AlexNet trained on ResNet-50 SeLa labels (%)"),
    "label_transfer_alexnet_self": (46.5, "AlexNet trained by SeLa itself (%)"),
    "imagenet_sinkhorn_seconds": (120.0, "Sinkhorn at N=1.28M, K=3000 on GPU (s, 'within 2 minutes')"),
}

#: The imbalance table (a CIFAR-10 variant, one head of 128 clusters; its values, not its printed
#: differences): training data -> method -> one figure per column of :data:`IMBALANCE_COLUMNS`.
IMBALANCE_COLUMNS = ("kNN C10", "kNN C100", "linear C10", "linear C100")
IMBALANCE: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "full": {"supervised": (92.1, 24.0, 90.2, 54.2), "k-means": (64.7, 19.3, 77.5, 45.6),
             "SK": (72.9, 28.9, 79.8, 49.4)},
    "light": {"supervised": (92.0, 24.0, 90.4, 53.6), "k-means": (64.2, 18.1, 77.0, 44.8),
              "SK": (71.7, 28.2, 79.5, 48.6)},
    "heavy": {"supervised": (86.7, 22.6, 86.8, 51.4), "k-means": (60.7, 17.8, 75.2, 44.3),
              "SK": (67.6, 26.7, 77.2, 47.5)},
}

#: ImageNet ablations, AlexNet, linear probes at (conv3, conv4, conv5): clusters of one head ...
CLUSTERS: dict[str, tuple[float, float, float]] = {
    "1k": (40.1, 42.1, 38.8), "3k": (43.0, 44.7, 40.9), "5k": (42.5, 43.9, 40.2), "10k": (42.2, 43.8, 39.7)}
#: ... and the number of label optimisations for [3k x 1].
LABEL_OPTIMISATIONS: dict[int, tuple[float, float, float]] = {
    0: (20.8, 18.3, 13.4), 40: (42.7, 43.4, 39.2), 80: (43.0, 44.7, 40.9), 160: (42.4, 44.6, 40.7)}

#: Label transfer (ImageNet linear top-1 %): the [3k x 10] networks, and fresh AlexNets trained on their labels.
LABEL_TRANSFER: dict[str, float] = {
    "alexnet": 46.7, "alexnet on alexnet labels": 46.5, "resnet-50": 61.5, "alexnet on resnet-50 labels": 48.4}

#: Pascal VOC transfer: the paper's classification table could not be read; leaderboards attribute the rest.
VOC: dict[str, float | None] = {
    "VOC07 classification mAP (paper protocol)": None,
    "VOC07 detection mAP (leaderboards, unverified)": 59.2,
    "VOC12 segmentation mIoU (leaderboards, unverified)": 45.7,
}

#: The official READMEs' tables of the released models (ImageNet val; %): SeLa's (yukimasano/self-label),
#: then the SwAV repository's SeLa-v2, DeepCluster-v2 and SwAV ResNet-50s.
RELEASED_MODELS: dict[str, dict[str, float]] = {
    "resnet50-10x3k": {"NMI": 54.2, "aNMI": 34.4, "ARI": 7.2, "linear probe top-1": 61.5},
    "resnet18-1k-pp": {"label accuracy": 26.9, "NMI": 62.7, "aNMI": 36.4, "ARI": 12.5, "linear probe top-1": 53.3},
    "resnet50-1k-pp": {"label accuracy": 30.5, "NMI": 65.7, "aNMI": 42.0, "ARI": 16.2, "linear probe top-1": 63.5},
    "resnet50-10x3k-pp": {"label accuracy": 38.1, "NMI": 75.7, "aNMI": 52.8, "ARI": 27.6, "linear probe top-1": 68.8},
    # SwAV, DeepCluster-v2 and SeLa-v2 ResNet-50s (Caron et al. 2020): the "Model Zoo" table of the
    # facebookresearch/swav README, column "ImageNet top-1 acc." (a linear classifier on frozen features,
    # eval_linear.py). Epochs, batch size 4096 unless named, multi-crop as the name says (no suffix:
    # 2x224 + 6x96 for SwAV and DeepCluster-v2 800ep, 2x160 + 4x96 for DeepCluster-v2 and SeLa-v2 400ep).
    "swav-800ep": {"linear probe top-1": 75.3},
    "swav-400ep": {"linear probe top-1": 74.6},
    "swav-200ep": {"linear probe top-1": 73.9},
    "swav-100ep": {"linear probe top-1": 72.1},
    "swav-200ep-bs256": {"linear probe top-1": 72.7},
    "swav-400ep-bs256": {"linear probe top-1": 74.3},
    "swav-400ep-2x224": {"linear probe top-1": 70.1},
    "deepcluster-v2-800ep": {"linear probe top-1": 75.2},
    "deepcluster-v2-400ep": {"linear probe top-1": 74.3},
    "deepcluster-v2-400ep-2x224": {"linear probe top-1": 70.2},
    "sela-v2-400ep": {"linear probe top-1": 71.8},
    "sela-v2-400ep-2x224": {"linear probe top-1": 67.2},
}

#: What the official CIFAR code (``cifar.py``) does, setting by setting (notebook 04's deviation table).
OFFICIAL_CIFAR: dict[str, str] = {
    "network": "AlexNet with BatchNorm (the ImageNet model)",
    "input size": "upsampled: Resize 256, random resized crop 224 (scale 0.2-1)",
    "heads x clusters": "10 x 128",
    "lambda": "10",
    "epochs / label optimisations": "400 / 400, evenly spaced",
    "heads per optimisation": "one, round robin (epoch % heads)",
    "scores for the label step": "training loader: augmented images, BatchNorm in train mode",
    "batch, lr, momentum, weight decay": "128, 0.03, 0.9, 5e-4",
    "Sinkhorn precision": "float64 (numpy), one head's P at a time",
    "Sinkhorn stop": "every 10 iterations, sum_i |c_i / c_new_i - 1| < 1e-2",
    "final kNN": "k = 10, sigma 0.1, 4096-d fc features after PCA to 128",
}

#: SeLa beside its successors: ImageNet linear top-1 (%) of ResNet-50 after 400 epochs, with multi-crop
#: (SwAV 2 x 224 + 6 x 96; DeepCluster-v2 and SeLa-v2 2 x 160 + 4 x 96) and with two 224 px crops only
#: (facebookresearch/swav README's model zoo), and the original SeLa's ResNet-50 (its README, 10 x 3000).
SUCCESSORS: dict[str, dict[str, float]] = {
    "swav": {"multi-crop": RELEASED_MODELS["swav-400ep"]["linear probe top-1"],
             "2 crops": RELEASED_MODELS["swav-400ep-2x224"]["linear probe top-1"]},
    "deepcluster-v2": {"multi-crop": RELEASED_MODELS["deepcluster-v2-400ep"]["linear probe top-1"],
                       "2 crops": RELEASED_MODELS["deepcluster-v2-400ep-2x224"]["linear probe top-1"]},
    "sela-v2": {"multi-crop": RELEASED_MODELS["sela-v2-400ep"]["linear probe top-1"],
                "2 crops": RELEASED_MODELS["sela-v2-400ep-2x224"]["linear probe top-1"]},
    "sela": {"multi-crop": RELEASED_MODELS["resnet50-10x3k"]["linear probe top-1"]},
}

__all__ = ["RESULTS", "IMBALANCE_COLUMNS", "IMBALANCE", "CLUSTERS", "LABEL_OPTIMISATIONS", "LABEL_TRANSFER", "VOC",
           "RELEASED_MODELS", "OFFICIAL_CIFAR", "SUCCESSORS"]
