"""``sela-edu course init``: the course folder, its nbgrader configuration and the profile every autograde
runs at. (nbgrader's whole pipeline on such a folder: tests/test_nbgrader_pipeline.py.)"""

from __future__ import annotations

import nbformat
import pytest
from traitlets.config.loader import PyFileConfigLoader

from sela_edu import cli, settings
from sela_edu.course.teaching import editions
from sela_edu.course.teaching import nbgrader_course
from sela_edu.course.teaching.nbgrader_course import SetProfile, course_config, init_course

ROOT = settings.REPO_ROOT


def _load_config(path):
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def test_course_init_writes_the_config_and_the_assignment_source(tmp_path):
    written = init_course(tmp_path / "course", assignment="week1", profile="classroom", timeout=99)
    source = sorted((tmp_path / "course" / "source" / "week1").glob("*.ipynb"))
    assert [p.name for p in source] == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert written == [tmp_path / "course" / "nbgrader_config.py", *source]
    nb = nbformat.read(source[0], as_version=4)
    assert nb.metadata["sela_edition"] == "instructor" and editions.validate_nbgrader(nb) == []
    c = _load_config(tmp_path / "course" / "nbgrader_config.py")
    assert c.CourseDirectory.course_id == "sela" and c.SetProfile.profile == "classroom"
    assert c.Execute.timeout == 99
    assert {"results", "checkpoints"} <= set(c.CourseDirectory.ignore)


def test_the_config_adds_the_profile_and_clears_hidden_tests_from_feedback():
    pytest.importorskip("nbgrader")
    from nbgrader.preprocessors import ClearHiddenTests, Execute

    autograde = nbgrader_course.autograde_preprocessors()
    assert autograde.index(SetProfile) == autograde.index(Execute) - 1
    feedback = nbgrader_course.feedback_preprocessors()
    assert ClearHiddenTests in feedback and len(feedback) == 3


def _notebook():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# title"),
                                         nbformat.v4.new_code_cell('profile = "classroom"'),
                                         nbformat.v4.new_code_cell("print(profile)")])
    nb.cells[1].metadata["tags"] = ["parameters"]
    return nb


def test_set_profile_injects_the_profile_after_the_parameters():
    nb, _ = SetProfile(profile="paper")(_notebook(), {})      # as nbgrader calls it
    assert [c.source.splitlines()[-2:] for c in nb.cells][2] == ["profile = 'paper'", "output_dir = 'results'"]
    assert nb.cells[2].metadata["tags"] == ["injected-parameters"]
    namespace = {}
    for cell in nb.cells[1:3]:
        exec(cell.source, namespace)
    assert namespace["profile"] == "paper"
    nbformat.validate(nb)


def test_set_profile_refuses_an_unknown_profile():
    with pytest.raises(Exception, match="unknown profile 'fast'"):
        SetProfile(profile="fast")


@pytest.mark.parametrize("kwargs, message", [({"course_id": "my course"}, "course id"),
                                             ({"profile": "fast"}, "unknown profile"),
                                             ({"timeout": 0}, "timeout")])
def test_course_config_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        course_config(**{"course_id": "sela", **kwargs})


def test_course_init_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "gradebook.db").write_text("")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        init_course(tmp_path / "course")


def test_from_a_pip_install_course_init_names_what_it_needs_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A pip install has neither notebooks/ nor instructor/: one message names --source and --material and
    where they come from; the command fails without making the folder."""
    monkeypatch.setattr(editions, "INSTRUCTOR_DIR", tmp_path / "site-packages" / "instructor")
    monkeypatch.setattr(editions, "_default_notebooks_dir", lambda: tmp_path / "site-packages" / "notebooks")
    assert cli.main(["course", "init", str(tmp_path / "course")]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and "--material" in err and "repository" in err
    assert not (tmp_path / "course").exists()
    assert cli.main(["instructor", "--output", str(tmp_path / "edition")]) == 2
    assert "--source" in capsys.readouterr().err and not (tmp_path / "edition").exists()
    # given both, it works
    assert cli.main(["course", "init", str(tmp_path / "course"), "--source", str(ROOT / "notebooks"),
                     "--material", str(ROOT / "instructor")]) == 0
    assert (tmp_path / "course" / "nbgrader_config.py").is_file()
