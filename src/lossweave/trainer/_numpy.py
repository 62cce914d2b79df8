"""NumPy: Keras trains nothing on this backend; the steps call through."""


def gate_train_step(model, train_step, records, *args):
    return train_step(*args)


def guard_step(model, function, kind, records):
    return function


def gradient_train_step(model, *args):
    raise NotImplementedError("Keras has no training on the NumPy backend.")
