"""The SeLa authors' released models, loaded by name into the kit's :class:`~sela_edu.models.MultiHeadNet`.

One module per job:

* :mod:`~sela_edu.apps.pretrained.registry`: what was released (:data:`RELEASED`, URLs, the official
  README's figures), :func:`list_released`, :class:`PretrainedError`;
* :mod:`~sela_edu.apps.pretrained.files`: the download cache, downloads, verification (zip CRCs, SHA-256),
  reading a file with a clear error when it is damaged;
* :mod:`~sela_edu.apps.pretrained.convert`: the official key layouts (AlexNet, pre-activation and v1
  ResNets, torchvision's ResNets) mapped onto the kit's names, and the kit model built for them;
* :mod:`~sela_edu.apps.pretrained.preact`: the official pre-activation ResNet-50, with its parameter names;
* :mod:`~sela_edu.apps.pretrained.load`: a file, or a released model by name, loaded into a
  :class:`Pretrained` (model, stored pseudo-labels, rotation head, normalisation).

Every public name is importable from here.

Usage::

    from sela_edu.apps.pretrained import load_released, list_released
    print(list_released())
    pre = load_released("resnet50-10x3k-pp")      # downloads about 100 MB once
    feats = pre.model.features(images_224px)      # N x 2048
    pre.labels.shape                               # heads x 1,281,167 ImageNet pseudo-labels
"""

from sela_edu.apps.pretrained.convert import build_for_state, convert_state_dict, detect_layout, model_from_state_dict
from sela_edu.apps.pretrained.files import cache_dir, check_zip, fetch, read_torch_file, verify_file
from sela_edu.apps.pretrained.load import Pretrained, load_checkpoint_file, load_released, torchvision_backbone
from sela_edu.apps.pretrained.preact import PreActResNet50
from sela_edu.apps.pretrained.registry import (ASSET_URL, IMAGENET_MEAN, IMAGENET_STD, README_FIGURES, RELEASED,
                                               RELEASED_LABELS, ZIP_URL, PretrainedError, ReleasedModel,
                                               list_released)

__all__ = ["RELEASED", "RELEASED_LABELS", "README_FIGURES", "ReleasedModel", "Pretrained", "PretrainedError",
           "PreActResNet50", "cache_dir", "fetch", "load_released", "load_checkpoint_file", "list_released",
           "convert_state_dict", "detect_layout", "model_from_state_dict", "build_for_state", "verify_file",
           "check_zip", "read_torch_file", "torchvision_backbone"]
