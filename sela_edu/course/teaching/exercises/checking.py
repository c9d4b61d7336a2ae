"""What every exercise checker shares: the failure that carries the hint, calling the student's function,
reading what it returns, and refusing the kit function an exercise re-derives (:func:`without_kit`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import numpy as np


class ExerciseFailure(AssertionError):
    """A wrong answer to an exercise; the message is the hint."""


def as_numbers(x, what: str) -> np.ndarray:
    """The student's array or tensor as float numpy; a hint naming ``what`` when it is not numbers."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ExerciseFailure(f"{what} should be an array or tensor of numbers, got {type(x).__name__}") from exc


def call_answer(fn: Callable, *args, what: str):
    """``fn(*args)``, with a hint when ``fn`` is not a function or is still the notebook's stub."""
    if not callable(fn):
        raise ExerciseFailure(f"pass your function itself (e.g. check(my_function)), not {type(fn).__name__}")
    try:
        return fn(*args)
    except NotImplementedError as exc:
        raise ExerciseFailure(
            f"{what} is not written yet: replace the `# YOUR CODE HERE` stub and `raise NotImplementedError`"
        ) from exc


def passed(message: str, quiet: bool) -> None:
    """The confirmation a right answer prints (nothing when ``quiet``)."""
    if not quiet:
        print(f"Correct: {message}")


@contextlib.contextmanager
def without_kit(fn: Callable, *kit_functions: Callable, exercise: str) -> Iterator[None]:
    """Inside the block, each of ``kit_functions`` raises :class:`ExerciseFailure` when called.

    Some exercises re-derive a public function of the kit (e.g. ``size_spread`` is
    :func:`sela_edu.evaluation.metrics.cluster_size_spread`), so an answer that only calls it would pass. The
    stand-in replaces the function wherever it is bound: in every loaded ``sela_edu`` module and in the
    namespace ``fn`` was defined in (a notebook's globals, where ``from sela_edu.evaluation.metrics import ...``
    puts it). Everything is restored on leaving."""
    spaces = [vars(module) for name, module in list(sys.modules.items())
              if module is not None and (name == "sela_edu" or name.startswith("sela_edu."))]
    spaces.append(getattr(fn, "__globals__", {}))
    replaced = []
    for kit in kit_functions:
        stand_in = _refused(f"{kit.__module__}.{kit.__name__}", exercise)
        for space in spaces:
            for name, value in list(space.items()):
                if value is kit:
                    space[name] = stand_in
                    replaced.append((space, name, kit))
    try:
        yield
    finally:
        for space, name, kit in replaced:
            space[name] = kit


def _refused(kit_name: str, exercise: str) -> Callable:
    def refused(*args, **kwargs):
        raise ExerciseFailure(f"{exercise} calls the kit's {kit_name}, which is the answer itself: write the "
                              "computation yourself (the kit's function is what the checker compares with)")
    return refused
