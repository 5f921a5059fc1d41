"""Hyperparameter search on the validation split (``mmanet tune``), built on Optuna.

Every trial trains one method with the parameters Optuna's TPE sampler draws from a
search space (:mod:`~mmanet.tune.space`), validates every epoch and reports the selection
value (the Validation object's: the average over the combinations for a unified network)
to a pruner, which may end it early; its objective is its best validation value. The test
split is never evaluated. The teacher of a distilling method is trained once
(``DIR/teacher``) and shared by every trial. The study lives in a SQLite file in ``DIR``
(or an RDB URL shared by many workers) under a name fixed by ``DIR``, so the same command
resumes it (:mod:`~mmanet.tune.storage`). Trials run one after another, or side by side on
the scheduler's workers (a process pool or Ray), every worker drawing the next trial from
the same study (:mod:`~mmanet.tune.search`).

Outputs in ``DIR`` (:mod:`~mmanet.tune.outputs`): ``best.yaml`` (the best trial's full
config: ``mmanet train --config DIR/best.yaml`` reproduces its run), ``trials.csv``,
``search.png``, ``space.yaml`` and ``trials/NNNN/`` (each trial's run).
"""

from mmanet.tune.search import Search, Study, TuneInterrupted, tune
from mmanet.tune.space import Param, default_space, load_space, parse_space
from mmanet.tune.storage import PRUNERS, make_pruner

__all__ = [
    "PRUNERS",
    "Param",
    "Search",
    "Study",
    "TuneInterrupted",
    "default_space",
    "load_space",
    "make_pruner",
    "parse_space",
    "tune",
]
