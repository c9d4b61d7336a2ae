"""The notebooks' studies, each the loop of one lesson: the objective and lambda (:mod:`.objective`, 02),
imbalance (:mod:`.imbalance_study`, 05), label transfer (:mod:`.label_transfer`, 06), the label step's
timing (:mod:`.timing`, 07), the solver demo figure (:mod:`.solver_demo`), and a configuration's departures
from the official code (:mod:`.deviations`, 04)."""
