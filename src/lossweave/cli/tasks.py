"""The other targets of a multi-task data set on the command line: one head and one term each.

``lossweave train --data multitask`` trains the digit class with ``--loss``
(and center loss, as on any data set) and, beside it, every other target of
the :class:`lossweave.data.MultiTaskDataset` (``parity``, ``ink``, ``top``)
as a task of its own:

* a head ``Dense(num_classes)`` (a class target) or ``Dense(1)`` (a
  regression target) named ``task_<name>``, reading the trunk's features
  (the input of the embedding layer), so every task shares the trunk and
  none is squeezed through the 2-D embedding drawn in the report;
* a term named after the target: ``SoftmaxCrossEntropy`` on its logits, or
  ``Loss(MeanSquaredError())`` on the raw target (no rescaling: the
  loss-scale gap between ``ink`` (~0.01) and ``top`` (~1000) is what the
  weighting strategies have to handle);
* a test metric in ``metrics.json`` under ``tasks/<name>``: accuracy of a
  class target, mean absolute error of a regression target.

The weighting (``--weighting``) then combines K = 1 + tasks (+ center)
terms; a gradient-level strategy takes their gradients on the shared trunk.
A plain :class:`lossweave.data.Dataset` has no other targets: nothing here
changes its run.
"""

import numpy as np

LABEL = "label"  # the class target every Dataset has; its term is --loss's


def extra_tasks(dataset):
    """``{target: num_classes or None}`` of the targets beside the class label (``{}`` for a plain Dataset).

    Example:
        >>> from lossweave import data
        >>> extra_tasks(data.load("multitask", seed=0, n=100))
        {'parity': 2, 'ink': None, 'top': None}
        >>> extra_tasks(data.load("digits", seed=0))
        {}
    """
    tasks = getattr(dataset, "tasks", None) or {}
    return {name: classes for name, classes in tasks.items() if name != LABEL}


def targets(dataset, part):
    """The ``y`` dict of ``part`` (``"train"``, ``"val"``, ``"test"``): the label, and every task's target.

    Example:
        >>> from lossweave import data
        >>> sorted(targets(data.load("multitask", seed=0, n=100), "val"))
        ['ink', 'label', 'parity', 'top']
        >>> sorted(targets(data.load("digits", seed=0), "val"))
        ['label']
    """
    if extra_tasks(dataset):
        return dict(dataset.targets(part))
    return {LABEL: getattr(dataset, f"y_{part}")}


def _trunk_features(model):
    """The tensor the embedding layer reads (the shared features), else the embedding itself."""
    from lossweave import _keras_compat as keras_compat  # imports Keras: not at the CLI's import

    embedding = model.output["embedding"]
    nodes = keras_compat.inbound_nodes(keras_compat.producing_layer(embedding))
    if len(nodes) == 1 and len(nodes[0].input_tensors) == 1:
        return nodes[0].input_tensors[0]
    return embedding


def add_task_heads(model, tasks):
    """``model`` with one more output per task: ``name -> Dense(classes or 1)`` on the trunk features.

    Args:
        model: a functional model with dict outputs holding ``"embedding"``.
        tasks: ``{name: num_classes or None}`` (:func:`extra_tasks`).

    Returns:
        ``model`` itself when ``tasks`` is empty, else a new model with the
        same inputs and layers, its outputs and the task heads.

    Raises:
        ValueError: a task name that is already an output of the model.

    Example:
        >>> from lossweave.cli.models import build_mlp
        >>> model = add_task_heads(build_mlp((64,), 10, 2), {"parity": 2, "ink": None})
        >>> {k: tuple(v.shape) for k, v in model.output.items()}
        {'embedding': (None, 2), 'logits': (None, 10), 'parity': (None, 2), 'ink': (None, 1)}
    """
    import keras

    if not tasks:
        return model
    outputs = dict(model.output)
    clash = sorted(set(tasks) & set(outputs))
    if clash:
        raise ValueError(f"--data: the tasks {clash} have the names of model outputs {sorted(outputs)}; "
                         f"rename the model's outputs.")
    features = _trunk_features(model)
    for name, classes in tasks.items():
        outputs[name] = keras.layers.Dense(classes or 1, name=f"task_{name}")(features)
    return keras.Model(model.inputs, outputs, name=model.name)


def task_terms(tasks):
    """``{name: term}``: softmax cross-entropy for a class target, mean squared error for a regression.

    Example:
        >>> {k: type(v).__name__ for k, v in task_terms({"parity": 2, "ink": None}).items()}
        {'parity': 'SoftmaxCrossEntropy', 'ink': 'Loss'}
    """
    import keras

    import lossweave as lw

    return {
        name: (lw.terms.SoftmaxCrossEntropy(on=name, target=name) if classes
               else lw.terms.Loss(keras.losses.MeanSquaredError(), on=name, target=name))
        for name, classes in tasks.items()
    }


def task_metrics(outputs, targets, tasks):
    """``{name: {"accuracy": a} or {"mae": e}}`` of the test outputs against the targets.

    Example:
        >>> outputs = {"parity": np.array([[2.0, 0.0], [0.0, 1.0]]), "ink": np.array([[0.5], [0.1]])}
        >>> targets = {"parity": np.array([0, 0]), "ink": np.array([[0.4], [0.4]])}
        >>> task_metrics(outputs, targets, {"parity": 2, "ink": None})
        {'parity': {'accuracy': 0.5}, 'ink': {'mae': 0.2}}
    """
    metrics = {}
    for name, classes in tasks.items():
        predicted = np.asarray(outputs[name], dtype="float64")
        target = np.asarray(targets[name])
        if classes:
            metrics[name] = {"accuracy": float(np.mean(predicted.argmax(-1) == target.reshape(-1)))}
        else:
            error = np.abs(predicted.reshape(len(predicted), -1) - target.reshape(len(target), -1))
            metrics[name] = {"mae": float(np.mean(error))}
    return metrics
