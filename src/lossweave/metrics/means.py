"""``NamedMeans``: the weighted means of several named scalars in one vector of state."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lossweave")
class NamedMeans(keras.metrics.Metric):
    """Running weighted means of ``len(names)`` scalars, logged under their names.

    One ``keras.metrics.Mean`` per logged scalar costs two variable updates
    and two reads per step each; this metric keeps one ``(n,)`` total and one
    count for all of them: two updates per step whatever ``n``. The result is
    ``{names[i]: total[i] / count}`` (0 before any update, as ``Mean``).

    The ``Objective`` logs its term losses (``loss/<term>``) with one and its
    weights and gradient cosines (``weight/<term>``, ``cosine/<a>/<b>``) with
    another.

    Args:
        names: the names of the scalars, in the order of ``update_state``'s values.
        name: the metric's own name (not logged: the result is a dict).

    Example:
        >>> import numpy as np
        >>> means = NamedMeans(["loss/a", "loss/b"])
        >>> means.update_state([1.0, 10.0], sample_weight=1.0)
        >>> means.update_state([3.0, 20.0], sample_weight=3.0)
        >>> {k: float(v) for k, v in means.result().items()}
        {'loss/a': 2.5, 'loss/b': 17.5}
    """

    def __init__(self, names, name="named_means", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.names = list(names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"NamedMeans: `names` must be distinct and non-empty; received {names!r}.")
        self.total = self.add_variable(shape=(len(self.names),), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values, sample_weight=1.0):
        """Add ``values`` (a list of ``len(names)`` scalars) with weight ``sample_weight`` (a scalar)."""
        if len(values) != len(self.names):
            raise ValueError(
                f"NamedMeans: received {len(values)} values for the {len(self.names)} names {self.names}."
            )
        weight = ops.cast(sample_weight, self.dtype)
        # Few ops on eager PyTorch: a value already of the metric's dtype is not cast, and
        # the stack is reshaped only when a value is not a scalar (a loss of shape (1,)).
        # (A Keras Variable, e.g. a learned weight, is read first: TensorFlow's stack takes no Keras Variable.)
        values = [v.value if isinstance(v, keras.Variable) else v for v in values]
        values = [v if _dtype(v) == self.dtype else ops.cast(v, self.dtype) for v in values]
        vector = ops.stack(values)
        if any(len(v.shape) for v in values):
            vector = ops.reshape(vector, (len(self.names),))
        self.total.assign(self.total + weight * vector)
        self.count.assign(self.count + weight)

    def result(self):
        means = ops.divide_no_nan(ops.convert_to_tensor(self.total), ops.convert_to_tensor(self.count))
        return {name: means[i] for i, name in enumerate(self.names)}

    def reset_state(self):
        self.total.assign(ops.zeros((len(self.names),), self.dtype))
        self.count.assign(ops.zeros((), self.dtype))

    def get_config(self):
        return {"names": self.names, "name": self.name, "dtype": self.dtype}


def _dtype(value):
    """The Keras name of a tensor's dtype; ``None`` for a Python number (which is cast)."""
    dtype = getattr(value, "dtype", None)
    return None if dtype is None else keras.backend.standardize_dtype(dtype)
