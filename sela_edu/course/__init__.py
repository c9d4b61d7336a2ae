"""The course machinery: what the notebooks call around the science, and how the series is run.

* :mod:`.profiles`: profiles (``smoke``, ``classroom``, ``paper``), configurations, folders, clean stops.
* :mod:`.results`: measured numbers as JSON, the paper's figures, the summary table.
* :mod:`.runner`: papermill runs of one notebook or the series, with progress, and the stored outputs.
* :mod:`.paper`: the official CIFAR code's settings and a configuration's departures from them.
* :mod:`.data_choice`: the one data decision of the CPU notebooks and the runner (:func:`cpu_dataset`).

Notebooks use ``from sela_edu import course`` and call ``course.pick(...)``, ``course.record_result(...)``.
Notebooks call ``course.cpu_dataset(profile, dataset, data_root)`` for their data set.
The student edition lives in :mod:`sela_edu.course.editions`; data availability in :mod:`sela_edu.data`.
"""

from sela_edu.course.profiles import *  # noqa: F401,F403
from sela_edu.course.profiles import __all__ as _profiles_all
from sela_edu.course.results import *  # noqa: F401,F403
from sela_edu.course.results import __all__ as _results_all
from sela_edu.course.runner import *  # noqa: F401,F403
from sela_edu.course.runner import __all__ as _runner_all
from sela_edu.course.paper import *  # noqa: F401,F403
from sela_edu.course.paper import __all__ as _paper_all
from sela_edu.course.data_choice import *  # noqa: F401,F403
from sela_edu.course.data_choice import __all__ as _data_choice_all

__all__ = [*_profiles_all, *_results_all, *_runner_all, *_paper_all, *_data_choice_all]
