"""Run-time input checks of terms.

A compiled step cannot raise on a value without cost or harm: a host
callback costs about a millisecond per step on JAX, XLA compiles no
assertion, and an exception inside a JAX step whose state buffers were
donated leaves the model without its weights. So inside ``Objective`` steps a
failed check is *recorded* in the term's ``InputCheck`` (a metric: its state
travels with the step on every backend and is reset every epoch), the term
gates its loss and state update on the check, and ``backend.guard_step``
raises ``InvalidInputError`` right after the step. Called on its own, a term
raises directly.
"""

import typing

import keras
from keras import ops

from lossweave import _backend as backend
from lossweave.ops.distances import pair_labels
from lossweave.ops.labels import batch_shape, class_indices, finite_rows

NUM_VALUES = 6  # bad labels, first bad label, bad feature rows, batch size, label min, label max


@keras.saving.register_keras_serializable(package="lossweave")
class InputCheck(keras.metrics.Metric):
    """The first failed check since the last reset, as ``[failed, *values]``.

    Adds nothing to the logs (``result()`` is an empty dict); ``failure()``
    formats the recorded values into the message of the check that failed.

    Example:
        >>> import numpy as np
        >>> check = InputCheck()
        >>> check.message = "{} bad of {}"
        >>> check.update_state(np.array(False), [3.0, 8.0])
        >>> check.failure()
        '3 bad of 8'
    """

    def __init__(self, num_values=NUM_VALUES, name="input_check", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.num_values = num_values
        self.message = ""
        # Every replica of a tf.distribute step records the same global values
        # (see check_class_rows): read one copy, not their sum.
        self.record = self.add_variable(
            shape=(1 + num_values,), initializer="zeros", name="record", aggregation="only_first_replica"
        )

    def update_state(self, ok, values):
        """Record ``values`` if ``ok`` is false and nothing is recorded yet.

        ``values`` is a list of scalars, or one callable that computes them: it
        then runs in a branch taken only when the record changes (``ops.cond``).
        """
        current = ops.convert_to_tensor(self.record)
        keep = ops.logical_or(ok, current[0] > 0)  # keep the first failure
        if len(values) == 1 and callable(values[0]):
            self.record.assign(ops.cond(keep, lambda: current, lambda: self._failed(values[0]())))
        else:
            self.record.assign(ops.where(keep, current, self._failed(values)))

    def _failed(self, values):
        values = [ops.reshape(ops.cast(v, "float32"), (1,)) for v in values]
        padding = [ops.zeros((self.num_values - len(values),), "float32")] if len(values) < self.num_values else []
        return ops.concatenate([ops.ones((1,), "float32"), *values, *padding])

    def result(self):
        return {}

    def reset_state(self):
        self.record.assign(ops.zeros((1 + self.num_values,), "float32"))

    def failure(self, record=None):
        """The formatted message if a failure is recorded, else ``None``."""
        values = keras.ops.convert_to_numpy(self.record if record is None else record)
        if values[0] <= 0:
            return None
        shown = [int(v) if float(v).is_integer() else float(v) for v in values[1:]]
        return self.message.format(*shown)

    def get_config(self):
        return {"num_values": self.num_values, "name": self.name, "dtype": self.dtype}


class _TermFlags(str):
    """A message template over one 0/1 flag per term that names the flagged terms.

    As a plain string it is the template ``"... (not finite = 1: a={}, b={}) ..."``
    (what a TensorFlow assert in a user's own graph formats); ``format`` (used
    by ``InputCheck.failure`` and by an eager check) names the terms whose flag
    is set instead.
    """

    def __new__(cls, term_names, quantity, hint):
        flags = ", ".join(f"{n}={{}}" for n in term_names)
        text = (f"Objective: the {quantity} of a term has NaN or Inf entries (not finite = 1: {flags}); "
                f"expected finite values. Nothing was updated. {hint}")
        message = super().__new__(cls, text)
        message.term_names, message.quantity, message.hint = list(term_names), quantity, hint
        return message

    def format(self, *flags):
        bad = [repr(n) for n, flag in zip(self.term_names, flags) if flag]
        which = f"term {bad[0]}" if len(bad) == 1 else f"terms {', '.join(bad)}"
        return (f"Objective: the {self.quantity} of {which} has NaN or Inf entries; expected finite "
                f"values. Nothing was updated. {self.hint}")


_HINTS = {
    "loss": (
        "Look for NaN/Inf in that term's targets or model outputs (lossweave.terms.Loss passes "
        "them to the Keras loss unchecked), or a loss that overflows (a large margin scale, log of 0)."
    ),
    "gradient": (
        "Look for a loss that overflows (a large margin scale, log of 0) or NaN inputs, or lower "
        "the learning rate."
    ),
}


@keras.saving.register_keras_serializable(package="lossweave")
class TermsFiniteCheck(InputCheck):
    """The step's check that one value per term (its loss, or its gradient) is finite.

    ``Objective`` checks every term's loss in every step (``quantity="loss"``)
    and, with a gradient-level strategy, every term's gradient
    (``quantity="gradient"``). A term whose value has a NaN or Inf entry fails
    the step: it raises ``InvalidInputError`` naming the term, and nothing
    moves (weights, optimizer slots, the terms' and the strategy's state).

    Args:
        term_names: the terms, in the order of the flags given to ``check``.
        quantity: ``"loss"`` or ``"gradient"``: what is checked (the message says it).

    Example:
        >>> import numpy as np
        >>> check = TermsFiniteCheck(["a", "b"], quantity="gradient")
        >>> check.update_state(np.array(False), [0.0, 1.0])
        >>> check.failure().split(" has")[0]
        "Objective: the gradient of term 'b'"
    """

    def __init__(self, term_names, quantity="loss", name=None, dtype="float32"):
        if quantity not in _HINTS:
            raise ValueError(f"TermsFiniteCheck: quantity must be one of {sorted(_HINTS)}; received {quantity!r}.")
        super().__init__(num_values=len(term_names), name=name or f"{quantity}_check", dtype=dtype)
        self.term_names = list(term_names)
        self.quantity = quantity
        self.message = _TermFlags(self.term_names, quantity, _HINTS[quantity])

    def check(self, finite):
        """Record (or raise, eagerly) a failure when an entry of ``finite`` (K,) is false; return "all finite"."""
        return backend.check(ops.all(finite), self.message, _Flags(finite), record=self)

    def update_state(self, ok, values):
        """Record the failed terms' flags as one ``(K,)`` vector (one select, no branch, whatever K)."""
        if len(values) == 1 and isinstance(values[0], _Flags):
            current = ops.convert_to_tensor(self.record)
            keep = ops.logical_or(ok, current[0] > 0)  # keep the first failure
            failed = ops.concatenate([ops.ones((1,), "float32"), values[0].vector()])
            self.record.assign(ops.where(keep, current, failed))
        else:
            super().update_state(ok, values)

    def get_config(self):
        return {"term_names": self.term_names, "quantity": self.quantity, "name": self.name, "dtype": self.dtype}


class _Flags:
    """The values of a failed ``TermsFiniteCheck``: called, one 0/1 scalar per term (what a message
    formats, computed only where one is needed); ``vector()``, the same as one ``(K,)`` tensor."""

    def __init__(self, finite):
        self.finite = finite

    def vector(self):
        return ops.cast(ops.logical_not(self.finite), "float32")

    def __call__(self):
        bad = self.vector()
        return tuple(bad[k] for k in range(self.finite.shape[0]))


def check_class_rows(term, features, labels, num_classes):
    """Check labels and features of a classification term; return the "batch is clean" flag.

    Shape errors are raised at trace time by ``class_indices``. Values are
    checked at run time: any row with a bad label or NaN/Inf features makes the
    flag false and raises ``InvalidInputError`` (see the module docstring for
    when). Callers gate their loss and state update on the returned flag.
    """
    indices, valid = class_indices(labels, num_classes, what=f"{type(term).__name__} '{term.name}' labels")
    features32 = ops.cast(features, "float32")
    finite = finite_rows(features32)
    # What the term's loss and update read again (``Term.checked_rows``): computed once per step.
    if hasattr(term, "remember"):
        term.remember("checked_rows", CheckedRows(features, labels, features32, indices, valid, finite))

    def raw_labels():
        raw = ops.cast(labels, "float32")
        if len(labels.shape) == 2 and labels.shape[-1] == num_classes and num_classes > 1:
            raw = ops.cast(ops.argmax(ops.where(ops.isnan(raw), -1.0, raw), axis=-1), "float32")
        return ops.reshape(raw, (-1,))

    message = _RowsMessage(
        term,
        f"Expected integer class indices in [0, {num_classes}) (or one-hot rows of width {num_classes}) "
        f"and finite features",
        "Clean the data or fix num_classes.",
    )
    return _check_rows(term, message, valid, finite, raw_labels)


class CheckedRows(typing.NamedTuple):
    """The rows ``check_class_rows`` read: the inputs it was given and what it computed from them.

    ``features32``: the features as float32; ``indices``: int32 class indices,
    in range on every row (an invalid label points at class 0); ``valid``: the
    label is valid; ``finite``: the features' row is finite. A term whose loss
    needs the same (``SoftmaxCrossEntropy``, ``CenterLoss``) takes them from
    ``Term.checked_rows`` instead of computing them again.
    """

    features: typing.Any
    labels: typing.Any
    features32: typing.Any
    indices: typing.Any
    valid: typing.Any
    finite: typing.Any


class _RowsMessage(str):
    """The message of a failed row check, which names only the kinds of bad rows the batch has.

    As a plain string it is the template with every part (what a TensorFlow
    assert in a user's own graph formats); ``format(n_bad_labels, first_bad,
    n_bad_features, batch, low, high)`` leaves out a count that is 0.
    """

    def __new__(cls, term, expected, advice):
        owner = f"{type(term).__name__} '{term.name}'"
        text = (f"{owner}: {{}} row(s) with an invalid label (first: {{}}) and {{}} row(s) with NaN/Inf "
                f"features in a batch of {{}}. {expected}; received labels in [{{}}, {{}}]. {advice}")
        message = super().__new__(cls, text)
        message.owner, message.expected, message.advice = owner, expected, advice
        return message

    def format(self, n_bad_labels, first_bad, n_bad_features, batch, low, high):
        found = []
        if n_bad_labels:
            found.append(f"{n_bad_labels} row(s) with an invalid label (first: {first_bad})")
        if n_bad_features:
            found.append(f"{n_bad_features} row(s) with NaN/Inf features")
        return (f"{self.owner}: {' and '.join(found) or 'no usable row'} in a batch of {batch}. "
                f"{self.expected}; received labels in [{low}, {high}]. {self.advice}")


def _check_rows(term, message, valid, finite, raw_labels):
    """The "batch is clean" flag of rows checked by ``valid`` and ``finite``; a failure is reported.

    The step pays for one count of the bad rows (and of the batch, where its
    size is known only at run time); the values of the message (bad label and
    feature counts, the first bad label, the label range) are computed only
    when the check fails: eagerly before raising, or in an ``ops.cond`` branch
    of a compiled step. Every count is over the global batch under
    tf.distribute: every replica gates its loss and state update on the same
    flag, takes the same branch and records the same values.
    """
    clean_rows = ops.cast(ops.logical_and(valid, finite), "int32")
    batch = backend.all_reduce(ops.shape(valid)[0], "sum")
    ok = ops.equal(backend.all_reduce(ops.sum(clean_rows), "sum"), batch)
    if not isinstance(batch, int):
        # An empty batch is refused when traced (Term.__call__); where its size is only
        # known at run time (a TF step traced for any batch size) it fails here.
        ok = ops.logical_and(ok, ops.greater(batch, 0))

    def failure_values():
        raw = raw_labels()
        n_bad_labels = backend.all_reduce(ops.sum(ops.cast(ops.logical_not(valid), "int32")), "sum")
        n_bad_features = backend.all_reduce(ops.sum(ops.cast(ops.logical_not(finite), "int32")), "sum")
        # The first invalid label of the global batch: what a user greps the data for
        # (a non-integer or NaN label can lie inside [min, max]).
        all_raw, all_valid = backend.all_gather((raw, valid))
        # (One padded entry keeps argmax defined on an empty batch, whose shape TF may not know.)
        padded_raw = ops.concatenate([all_raw, ops.zeros((1,), all_raw.dtype)])
        padded_bad = ops.concatenate([ops.cast(ops.logical_not(all_valid), "int32"), ops.zeros((1,), "int32")])
        first_bad = ops.take(padded_raw, ops.argmax(padded_bad))
        first_bad = ops.where(ops.greater(n_bad_labels, 0), first_bad, ops.cast(float("nan"), "float32"))
        low, high = backend.all_reduce(ops.min(raw), "min"), backend.all_reduce(ops.max(raw), "max")
        values = (n_bad_labels, first_bad, n_bad_features, batch, low, high)
        return tuple(ops.cast(v, dtype) for v, dtype in zip(values, _VALUE_DTYPES))

    return backend.check(ok, message, failure_values, record=term.input_check)


# The dtypes of the values of a failed check, as the message shows them (counts as integers).
_VALUE_DTYPES = ("int32", "float32", "int32", "int32", "float32", "float32")


def _pair_label_shape(term, labels):
    """Trace-time shape check of a pair loss's labels: sparse ``(batch,)`` or ``(batch, 1)``."""
    what = f"{type(term).__name__} '{term.name}' labels"
    shape = labels.shape
    if getattr(shape, "rank", 0) is None:  # a TensorShape of unknown rank (TF retrace)
        raise ValueError(
            f"{what}: received labels of unknown rank when the step was traced (TensorFlow "
            f"generalizes a step's input shapes once it has seen labels of several shapes); "
            f"expected sparse class indices of shape (batch,) or (batch, 1). Give every batch's "
            f"labels the same shape."
        )
    shape = tuple(shape)
    if len(shape) > 2 or len(shape) == 0:
        raise ValueError(
            f"{what}: received labels of rank {len(shape)} (shape {batch_shape(shape)}); expected sparse "
            f"class indices of shape (batch,) or (batch, 1), or multi-hot rows (batch, classes)."
        )
    return len(shape) == 2 and shape[-1] not in (1, None)  # multi-hot rows (lossweave.ops.pair_structure)


def _multi_hot_check(labels):
    """``(valid, raw)`` of multi-hot rows: every entry 0 or 1 (an all-zero row is valid: it has no class and
    takes part in no pair), and a function giving each row's first entry that is neither (0 on a clean row)."""
    values = ops.cast(labels, "float32")
    binary = ops.logical_or(ops.equal(values, 0.0), ops.equal(values, 1.0))

    def raw():
        first = ops.argmax(ops.cast(ops.logical_not(binary), "int32"), axis=1)
        return ops.take_along_axis(values, ops.expand_dims(first, 1), axis=1)[:, 0]

    return ops.all(binary, axis=1), raw


def check_pair_rows(term, features, labels, binary=False):
    """Check the class ids and features of a pair loss; return the "batch is clean" flag.

    Pair losses (contrastive, triplet, ...) have no ``num_classes``: a label is
    a class id, any non-negative integer (int, or an integer-valued float) of
    shape ``(batch,)`` or ``(batch, 1)``, or a multi-hot row ``(batch,
    classes)`` of 0s and 1s (an all-zero row has no class: no pair holds it);
    with ``binary=True`` (a siamese same/different target) it must be 0 or 1.
    Shapes are checked at trace time
    (a ``ValueError``); values at run time as in ``check_class_rows``: a row
    with a negative, non-integer or non-finite label, or NaN/Inf features,
    makes the flag false and raises ``InvalidInputError``. Callers gate their
    loss (0 when not clean) and state updates on the flag.

    Args:
        term: the term (its name goes into the message; its ``input_check``
            records a failure inside an ``Objective`` step).
        features: ``(batch, dim)`` tensor, or a tuple of them (all are checked).
        labels: the labels (class ids, or 0/1 targets with ``binary=True``).
        binary: labels are same(1)/different(0) pair targets.
    """
    labels = ops.convert_to_tensor(labels)
    multi_hot = _pair_label_shape(term, labels)
    if multi_hot and binary:
        raise ValueError(
            f"{type(term).__name__} '{term.name}' labels: received 2-D targets of width {labels.shape[-1]}; "
            f"expected one same(1)/different(0) target per pair, of shape (batch,) or (batch, 1)."
        )
    if multi_hot:
        valid, raw = _multi_hot_check(labels)
    else:
        ids, valid = pair_labels(labels)
        if binary:
            valid = ops.logical_and(valid, ids <= 1)

        def raw():
            return ops.reshape(ops.cast(labels, "float32"), (-1,))
    finite = None
    for part in features if isinstance(features, (tuple, list)) else (features,):
        rows = finite_rows(ops.cast(part, "float32"))
        finite = rows if finite is None else ops.logical_and(finite, rows)
    expected = (
        "same(1)/different(0) pair targets" if binary
        else "non-negative integer labels (class ids, sparse, of shape (batch,) or (batch, 1)) or multi-hot "
             "rows of 0s and 1s"
    )
    message = _RowsMessage(term, f"Expected {expected} and finite features", "Clean the data.")
    return _check_rows(term, message, valid, finite, raw)
