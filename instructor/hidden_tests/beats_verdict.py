# hidden: numpy arrays of five seeds, a tie, and integer values
import numpy as np

from sela_edu.course.teaching import exercises as _exercises
from sela_edu.course.ledger import claims as _ledger
with _exercises.without_kit(beats_verdict, _ledger.Beats, _ledger.judge, exercise="beats_verdict"):  # the answer
    _five = beats_verdict(np.array([60.0, 61.0, 59.5, 60.5, 60.2]), np.array([55.0, 55.4, 54.8, 55.1, 55.3]))
    _tie = beats_verdict([50.0, 52.0, 54.0], [50.0, 52.0, 54.0])
    _ints = beats_verdict([3, 3, 3], [5, 5, 5])
assert _five == "reproduces", "five seeds, a gap of 5 points against a spread under 1: reproduces"
assert _tie == "within the spread", "identical values: within the spread"
assert _ints == "does not reproduce", "integers, no spread, A behind: does not reproduce"
