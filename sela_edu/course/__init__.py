"""The course machinery: what the notebooks call around the science, and how the series is run, in five
groups:

* :mod:`.series`: profiles and folders, the notebooks in order, papermill runs, a run's records and pages,
  measured numbers and the summary table, the CPU notebooks' data decision;
* :mod:`.teaching`: the student and instructor editions, the nbgrader course, the exercise checkers;
* :mod:`.studies`: each lesson's loop (objective, imbalance, label transfer, timing, the solver demo) and a
  configuration's departures from the official code;
* :mod:`.ledger`: the paper's claims, their runs and their figures (notebook 08, ``sela-edu ledger``);
* :mod:`.views`: the shared plots, the cluster browser, result sentences from the numbers.

Notebooks use ``from sela_edu import course`` and call ``course.pick(...)``, ``course.record_result(...)``,
``course.cpu_dataset(profile, dataset, data_root)``: the series' names are importable from here.
"""

from importlib import import_module

#: the modules whose names ``course.<name>`` gives (each module's ``__all__``), loaded on first use so
#: that the command line, which reads the profiles, starts without torch
_NOTEBOOK_API = ("series.profiles", "series.results", "series.notebooks", "series.records", "series.runner",
                 "series.data_choice", "studies.deviations")
_GROUPS = ("series", "teaching", "studies", "ledger", "views")


def __getattr__(name):
    if name in _GROUPS:
        return import_module(f"{__name__}.{name}")
    for path in _NOTEBOOK_API:
        module = import_module(f"{__name__}.{path}")
        if name in module.__all__:
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    names = [n for path in _NOTEBOOK_API for n in import_module(f"{__name__}.{path}").__all__]
    return sorted([*globals(), *_GROUPS, *names])
