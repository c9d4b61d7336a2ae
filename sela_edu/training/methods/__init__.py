"""The trainer's methods, one module each on a shared base (:class:`~.base.Method`), all run by the one
loop of :mod:`sela_edu.training.loop`: what a step's loss is, where labels come from, and what a method
keeps between steps (SwAV's queue, DeepCluster-v2's memory bank), which goes into the checkpoint.

===================  ====================================================================================
``sela``             SeLa: labels by optimal transport on the whole data set (:mod:`.sela`)
``kmeans``           DeepCluster: k-means on the features, heads re-initialised (:mod:`.kmeans`)
``supervised``       fixed labels: the true classes, or transferred ones (:mod:`.supervised`)
``sela-v2``          SeLa's label step with SwAV's projection head, prototypes, temperature and multi-crop
``deepcluster-v2``   spherical k-means on a memory bank of embeddings; prototypes set to the centroids
``swav``             codes per batch by three Sinkhorn-Knopp iterations, swapped prediction (:mod:`.swav`)
===================  ====================================================================================
"""

from __future__ import annotations

from sela_edu.training.methods.base import Method, forward_views, labels_loss
from sela_edu.training.methods.deepcluster_v2 import DeepClusterV2, spherical_kmeans
from sela_edu.training.methods.kmeans import KMeans
from sela_edu.training.methods.sela import Sela, SelaV2
from sela_edu.training.methods.supervised import Supervised
from sela_edu.training.methods.swav import SwAV, swapped_prediction_loss

#: Method name (``TrainConfig.method``) -> its class.
METHOD_CLASSES: dict[str, type[Method]] = {cls.name: cls for cls in (Sela, KMeans, Supervised, SelaV2,
                                                                      DeepClusterV2, SwAV)}


def method_for(config) -> Method:
    """A fresh :class:`Method` of ``config.method`` for one run."""
    return METHOD_CLASSES[config.method](config)


__all__ = ["Method", "METHOD_CLASSES", "method_for", "forward_views", "labels_loss", "Sela", "SelaV2", "KMeans",
           "Supervised", "DeepClusterV2", "SwAV", "spherical_kmeans", "swapped_prediction_loss"]
