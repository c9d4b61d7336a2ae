"""Compatibility names: the former ``notebook_tools`` module, split by job.

* the course machinery (profiles, results, papermill runs): :mod:`sela_edu.course`;
* data availability and the CPU notebooks' data set: :func:`sela_edu.data.available`,
  :func:`sela_edu.data.cpu_dataset`, :func:`sela_edu.data.how_to_get`;
* frozen-feature evaluation: :func:`sela_edu.evaluation.frozen_evaluation`;
* the student edition: :mod:`sela_edu.editions`.

New code imports from those modules; this one only keeps old imports working.
"""

from .course import *  # noqa: F401,F403
from .course import __all__ as _course_all
from .data import available as dataset_available, cpu_dataset, how_to_get  # noqa: F401
from .editions import STUB_MARKER, build_student_edition, student_notebook  # noqa: F401
from .evaluation import frozen_evaluation  # noqa: F401

__all__ = [*_course_all, "dataset_available", "cpu_dataset", "how_to_get", "frozen_evaluation", "STUB_MARKER",
           "build_student_edition", "student_notebook"]
