"""Applications on top of the kit: self-label a folder of images (:mod:`.label_folder`), assign new
images to a trained model's clusters (:mod:`.assign`), the authors' released models (:mod:`.pretrained`)
and Pascal VOC classification with frozen features (:mod:`.voc`).
"""

from .label_folder import label_folder
from .assign import assign_folder

__all__ = ["label_folder", "assign_folder"]
