"""RLW: random loss weights drawn afresh at every training step."""

import keras
from keras import ops

from lossweave import arguments
from lossweave._seed_state import SavesSeedState
from lossweave.ops import weighting as rules
from lossweave.weighting.base import Weighting

@keras.saving.register_keras_serializable(package="lossweave")
class RLW(SavesSeedState, Weighting):
    """Random loss weighting (Lin et al., "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022;
    arXiv:2111.10603).

    At every training step fresh logits ``z ~ N(0, I_K)`` are drawn and the
    weights are ``w = softmax(z)`` (the paper's normal-distribution variant,
    as in LibMTL's ``RLW``): positive and summing to 1. The total is
    ``sum_k w_k * L_k``. Evaluation (``training=False``) uses the expected
    weight ``E[w_k] = 1 / K`` for every term, so evaluation losses are on the
    scale of the training losses (the mean of the terms).

    The draws come from a ``keras.random.SeedGenerator`` owned by the layer:
    its state is a variable that advances inside the compiled step on every
    backend and is saved with the Objective, so a resumed run continues the
    same sequence of weights.

    Args:
        seed: int seed of the weight draws; ``None`` for a random one.

    Example:
        >>> import numpy as np
        >>> w = RLW(seed=1)
        >>> w.setup(["a", "b", "c"])
        >>> losses = {"a": np.float32(1.0), "b": np.float32(2.0), "c": np.float32(3.0)}
        >>> _, weights = w.combine(losses, training=True)
        >>> round(sum(float(v) for v in weights.values()), 5)
        1.0
        >>> total, weights = w.combine(losses, training=False)
        >>> round(float(total), 5), round(float(weights["a"]), 5)
        (2.0, 0.33333)
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = arguments.seed(seed, "RLW")
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="rlw_seed_generator")

    def update(self, state, losses, step=None, training=False):
        vector = rules.as_vector(losses)
        weights = rules.rlw_weights(len(losses), self.seed_generator, training)
        return (ops.sum(weights * vector), weights), state

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config
