"""An nbgrader course folder for the kit's notebooks: ``sela-edu course init DIR``.

:func:`init_course` writes ``DIR/nbgrader_config.py`` and the instructor edition of the notebooks as the
source of one assignment (``DIR/source/<assignment>/``). The configuration makes nbgrader's pipeline
fit the kit:

* every autograde runs the notebooks at one profile, set once (``c.SetProfile.profile``), whatever the
  student's copy says: :class:`SetProfile` adds a cell after each notebook's ``parameters`` cell, as
  papermill does, that sets ``profile`` and sends results and checkpoints to ``results/`` next to the
  notebook;
* ``results/`` and checkpoints are kept out of the copies nbgrader makes (``CourseDirectory.ignore``),
  so they never reach the feedback folder;
* the feedback students get has no hidden tests (nbgrader's ``ClearHiddenTests`` runs in
  ``GenerateFeedback``), and errors print as one line (IPython's ``Minimal`` traceback mode), so that a
  failed hidden test does not show its code either;
* a per-cell timeout sized from measured autograde times (``instructor/README.md``).

The ``raises-exception`` tags that let "Run all" go past an unfinished exercise are in the instructor
edition itself (:mod:`sela_edu.course.teaching.editions`); nbgrader's ``generate_assignment`` keeps them.

nbgrader (``pip install 'sela-edu[instructor]'``) is needed to run the course, not to write it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from traitlets import Bool, Unicode, validate
from nbconvert.preprocessors import Preprocessor

from sela_edu.course.series.profiles import PROFILES, check_profile

__all__ = ["SetProfile", "init_course", "course_config", "autograde_preprocessors", "feedback_preprocessors",
           "CELL_TIMEOUT", "RESULTS_FOLDER", "COURSE_IGNORE"]

#: seconds a cell may run during autograde: the slowest cell at the smoke profile (05's training comparison)
#: took 36-38 s in the autograde run of instructor/README.md and up to 51 s in another, on busy 2-core
#: machines; about four times that leaves room for a slower grading machine
CELL_TIMEOUT = 200
#: where an autograded notebook writes results and checkpoints (next to it)
RESULTS_FOLDER = "results"
#: nbgrader's own ignore list plus the kit's outputs, kept out of autograded and feedback folders
COURSE_IGNORE = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", RESULTS_FOLDER, "checkpoints"]
_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


class SetProfile(Preprocessor):
    """Run a notebook at the configured profile: insert a cell that sets ``profile`` and ``output_dir``
    right after the cell tagged ``parameters`` (at the top when there is none)."""

    #: nbconvert's preprocessors are off unless enabled; this one is on wherever it is listed
    enabled = Bool(True).tag(config=True)
    profile = Unicode("smoke", help=f"the profile every autograde runs at: one of {', '.join(PROFILES)}"
                      ).tag(config=True)
    output_dir = Unicode(RESULTS_FOLDER, help="results folder of the run, relative to the notebook"
                         ).tag(config=True)

    @validate("profile")
    def _valid_profile(self, proposal):
        return check_profile(proposal["value"])

    def preprocess(self, nb, resources):
        import nbformat

        cell = nbformat.v4.new_code_cell(f"# set by the course's nbgrader_config.py (SetProfile)\n"
                                         f"profile = {self.profile!r}\noutput_dir = {self.output_dir!r}")
        cell.metadata["tags"] = ["injected-parameters"]
        at = next((i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), 0)
        nb.cells.insert(at, cell)
        return nb, resources


def autograde_preprocessors() -> list:
    """nbgrader's autograde preprocessors with :class:`SetProfile` before the execution."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    steps = list(Autograde.class_traits()["autograde_preprocessors"].default())
    steps.insert(steps.index(Execute), SetProfile)
    return steps


def feedback_preprocessors() -> list:
    """nbgrader's feedback preprocessors plus ``ClearHiddenTests``: students see the visible checks only."""
    from nbgrader.converters import GenerateFeedback
    from nbgrader.preprocessors import ClearHiddenTests

    steps = list(GenerateFeedback.class_traits()["preprocessors"].default())
    return steps[:1] + [ClearHiddenTests] + steps[1:]


def course_config(course_id: str, profile: str = "smoke", timeout: int = CELL_TIMEOUT) -> str:
    """The text of the course's ``nbgrader_config.py``."""
    check_profile(profile)
    if not _ID.match(course_id):
        raise ValueError(f"course id {course_id!r}: use letters, digits, '_' and '-' only")
    if timeout < 1:
        raise ValueError(f"the per-cell timeout must be at least 1 second, got {timeout}")
    return f'''"""nbgrader configuration of a course built on the sela-edu kit (written by `sela-edu course init`)."""
from sela_edu.course.teaching.nbgrader_course import COURSE_IGNORE, autograde_preprocessors, feedback_preprocessors

c = get_config()  # noqa: F821 (nbgrader provides it)

c.CourseDirectory.course_id = {course_id!r}
# the profile every autograde runs at, whatever each student's copy says ("smoke" | "classroom" | "paper")
c.SetProfile.profile = {profile!r}
c.Autograde.autograde_preprocessors = autograde_preprocessors()
# seconds per cell: the slowest cell at the smoke profile takes about a minute (see the kit's instructor/README.md)
c.Execute.timeout = {timeout}
# errors print as one line: a failed hidden test does not show its code in the feedback
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:", "--InteractiveShell.xmode=Minimal"]
# the hidden tests stay out of the feedback students get
c.GenerateFeedback.preprocessors = feedback_preprocessors()
# results and checkpoints (tens of MB per student) are neither copied around nor handed back
c.CourseDirectory.ignore = COURSE_IGNORE
'''


def init_course(directory: str | os.PathLike, *, course_id: str = "sela", assignment: str = "sela",
                profile: str = "smoke", timeout: int | None = None, source: str | os.PathLike | None = None,
                material: str | os.PathLike | None = None) -> list[Path]:
    """Write an nbgrader course folder: ``nbgrader_config.py`` and ``source/<assignment>/`` (the instructor
    edition of the notebooks in ``source``, with the hidden tests and answers of ``material``; ``timeout``
    seconds per cell, default :data:`CELL_TIMEOUT`). Returns the
    written paths. Everything is checked before the folder is made, so a failed run leaves none behind."""
    from sela_edu.course.teaching import editions
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} already exists and is not an empty folder: course init makes a new one")
    if not _ID.match(assignment):
        raise ValueError(f"assignment name {assignment!r}: use letters, digits, '_' and '-' only")
    config = course_config(course_id, profile, CELL_TIMEOUT if timeout is None else timeout)
    edition = editions.instructor_edition(source, material)
    made = not directory.exists()
    try:
        written = editions.write_notebooks(edition, directory / "source" / assignment)
        (directory / "nbgrader_config.py").write_text(config)
    except BaseException:
        if made:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return [directory / "nbgrader_config.py", *written]
