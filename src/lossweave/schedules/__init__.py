"""Step -> value functions evaluated inside the compiled step.

A schedule is called with the Objective's step counter (a tensor) and returns
a float32 scalar tensor computed with ``keras.ops``, so it changes during
training on every backend, JAX's compiled step included (a Python float
rebound from a callback would be frozen into the compiled step there).
"""

from lossweave.schedules.base import Constant, Lambda, Schedule
from lossweave.schedules.curves import Cosine, Exponential, LinearWarmup, Piecewise

__all__ = ["Constant", "Cosine", "Exponential", "Lambda", "LinearWarmup", "Piecewise", "Schedule"]
