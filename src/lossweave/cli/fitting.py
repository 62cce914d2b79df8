"""Training and evaluation: fit a run's objective, evaluate it on the test part, the ``metrics.json`` numbers."""

import dataclasses
import time

import numpy as np

from lossweave import data
from lossweave.cli import UsageError, prepare, registry
from lossweave.cli.options import TrainConfig


def finite_or_none(value):
    """``value`` as a float, or ``None`` if it is NaN or infinite (JSON has neither)."""
    value = float(np.asarray(value))
    return value if np.isfinite(value) else None


def _flatten(metrics, prefix=""):
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


_LABELS = {
    "test_accuracy": "test accuracy",
    "test_loss": "test loss",
    "test_losses": "test loss",
    "final_losses": "final train loss",
    "final_val_losses": "final validation loss",
    "val_accuracy": "validation accuracy",
    "final_weights": "final weight",
    "intra_inter_ratio": "intra/inter-class distance (test)",
    "embedding": "test embedding (cosine)",
    "tasks": "test task",
    "epochs": "epochs",
    "kept_epoch": "epoch kept",
    "train_seconds": "training time (s)",
}


# The report's groups of metrics.json's numbers, by top-level key, in the order shown.
GROUPS = {
    "classification": ("test_accuracy", "val_accuracy"),
    "tasks": ("tasks",),
    "losses": ("test_loss", "test_losses", "final_losses", "final_val_losses", "final_weights"),
    "embedding": ("intra_inter_ratio", "embedding"),
    "training": ("epochs", "kept_epoch", "train_seconds"),
}


def metric_groups(metrics, config=None):
    """``{group: rows}`` of :func:`metric_rows`, grouped by :data:`GROUPS` (empty groups left out).

    Example:
        >>> metric_groups({"test_accuracy": 0.9, "epochs": 3, "test_loss": 0.4})
        {'classification': [('test_accuracy', 'test accuracy', 0.9)], 'losses': [('test_loss', 'test loss', 0.4)], 'training': [('epochs', 'epochs', 3)]}
    """
    group_of = {key: group for group, keys in GROUPS.items() for key in keys}
    grouped = {}
    for row in metric_rows(metrics, config):
        grouped.setdefault(group_of.get(row[0].split("/")[0], "other"), []).append(row)
    return {group: grouped[group] for group in (*GROUPS, "other") if group in grouped}


def metric_rows(metrics, config=None):
    """``(key, label, value)`` rows of ``metrics.json``'s numbers, for tables and the summary.

    With the run's ``config``, the labels say what its total loss is (per
    weighting level: ``registry.total_label``) and which epoch it kept.
    """
    labels = dict(_LABELS)
    if config is not None:
        labels["test_loss"] = f"test loss ({registry.total_label(config.weighting)})"
        labels["kept_epoch"] = "epoch kept (" + ("lowest validation loss" if config.keep_best else "the last") + ")"
    rows = []
    for key, value in _flatten(metrics):
        head, _, term = key.partition("/")
        label = labels.get(head, head)
        rows.append((key, f"{label}: {term}" if term else label, value))
    return rows


@dataclasses.dataclass(eq=False)
class TrainResult:
    """What ``fit_and_evaluate`` returns: the trained objective and its test outputs."""

    config: TrainConfig
    dataset: data.Dataset
    objective: object
    history: dict
    test_logs: dict
    test_embedding: np.ndarray
    test_logits: np.ndarray  # None: no class scores (--split unseen-classes)
    val_logits: np.ndarray  # the validation rows' class scores, scored as the test rows (None likewise)
    train_seconds: float
    test_tasks: dict = None  # a multi-task data set's other targets: lossweave.cli.tasks.task_metrics
    kept_epoch: int = None  # 1-based: the epoch whose weights were evaluated and saved

    def centers(self):
        """``(centers, label)``: the center term's centers, else the test class means."""
        import keras

        if "center" in self.objective.terms:
            return keras.ops.convert_to_numpy(self.objective.terms["center"].centers), "learned centers"
        from lossweave.cli.objectives import class_means

        # NaN rows for classes without test rows (--split unseen-classes): the plots leave them out
        return class_means(self.test_embedding, self.dataset.y_test, self.dataset.num_classes), "class means"


def fit_and_evaluate(config, dataset, *, verbose=2, callbacks=(), backup=None):
    """Build the model and objective of ``config``, fit on ``dataset``, evaluate on its test part.

    Args:
        config: the resolved ``TrainConfig``.
        dataset: its ``lossweave.data.Dataset`` (``prepare.load_data``).
        verbose: ``fit``'s verbosity.
        callbacks: more ``fit`` callbacks (e.g. the TensorBoard writer).
        backup: a ``lossweave.cli.resume.Backup``: ``fit`` backs up to it every
            epoch (continuing from it if it holds epochs), and the history and
            training time are those of the whole run.
    """
    import keras

    import lossweave as lw
    from lossweave.cli.callbacks import KeepBest
    from lossweave.cli.objectives import class_means, class_scores, has_logits_head, predicted_logits
    from lossweave.cli.tasks import extra_tasks, targets, task_metrics

    prepare.set_seed(config.seed)
    try:
        batches = prepare.training_batches(config, dataset)
        model = prepare.build_model(config, dataset)
        objective = prepare.objective_of(config, model, dataset, steps_per_epoch=len(batches))
    except ValueError as error:  # a bad model file, output name, term parameter or P x K
        raise UsageError(str(error)) from None
    metrics = {"logits": [lw.metrics.LogitsAccuracy()]} if has_logits_head(config.loss) else None
    # A tuple loss's pair distances and active tuples: in the history, TensorBoard and the report (its
    # figure). Kept on: it runs inside the compiled step, and what it adds to a step is measured side by
    # side by benchmarks/tuple_statistics.py.
    tuple_terms = [t for t in objective.terms.values() if lw.metrics.TupleStatistics.accepts(t)]
    if tuple_terms:
        metrics = {**(metrics or {}), tuple_terms[0].on: [lw.metrics.TupleStatistics(tuple_terms[0])]}
    objective.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), metrics=metrics)
    keep = []
    if config.keep_best:  # the epoch of the lowest val_loss; in the backup, so a continued run knows it
        keep = [backup.keep_best() if backup else KeepBest()]
    started = time.perf_counter()
    history = objective.fit(
        x=batches,
        shuffle=False,  # already shuffled per epoch; fit's shuffle would reorder the batches again
        validation_data=(dataset.x_val, targets(dataset, "val")),
        epochs=config.epochs,
        verbose=verbose,
        callbacks=[*prepare.fit_callbacks(batches), *callbacks, *(backup.callbacks(*keep) if backup else keep)],
    ).history
    train_seconds = time.perf_counter() - started
    if backup is not None:  # a resumed fit returns its own epochs only
        history, train_seconds = backup.whole_run(history, train_seconds)
    best = keep[0].best_epoch if keep else None
    kept_epoch = len(history["loss"]) if best is None else best + 1
    test_logs = objective.evaluate(
        dataset.x_test, targets(dataset, "test"), batch_size=config.batch_size,
        verbose=0, return_dict=True,
    )
    outputs = objective.model.predict(dataset.x_test, batch_size=config.batch_size, verbose=0)
    means = None
    if class_scores(config.loss) == "means" and config.split == "stratified":
        # No class logits: score the test rows by the nearest training-class mean.
        train_embedding = objective.model.predict(dataset.x_train, batch_size=config.batch_size, verbose=0)
        means = class_means(train_embedding["embedding"], dataset.y_train, dataset.num_classes)
    test_logits = predicted_logits(objective, config.loss, outputs, means)
    val_logits = None
    if config.split != "stratified":  # the test classes were never trained: no accuracy
        test_logits = None
    else:  # every loss's validation accuracy, margin and pair terms included (Keras logs none for them)
        val_outputs = objective.model.predict(dataset.x_val, batch_size=config.batch_size, verbose=0)
        val_logits = predicted_logits(objective, config.loss, val_outputs, means)
    return TrainResult(
        config=config,
        dataset=dataset,
        objective=objective,
        history=history,
        test_logs=test_logs,
        test_embedding=np.asarray(outputs["embedding"], dtype="float64"),
        test_logits=test_logits,
        val_logits=val_logits,
        train_seconds=train_seconds,
        test_tasks=task_metrics(outputs, targets(dataset, "test"), extra_tasks(dataset)),
        kept_epoch=kept_epoch,
    )


def _accuracy(logits, labels):
    return None if logits is None else finite_or_none(np.mean(np.argmax(logits, axis=-1) == labels))


def run_metrics(result):
    """The ``metrics.json`` dict of a ``TrainResult`` (finite floats, or None).

    ``test_accuracy`` is the argmax of the class scores (``None`` without
    them: ``--split unseen-classes``); for a pair or proxy loss the scores
    are the cosine to each training class's mean embedding (nearest class
    mean); ``val_accuracy`` scores the validation rows the same way, for
    every loss. ``intra_inter_ratio`` is the Euclidean ratio of the report's feature
    picture; ``embedding`` holds the cosine retrieval and verification figures
    of ``lossweave.metrics.evaluate_embeddings`` on the test set, all of the
    weights of ``kept_epoch`` (1-based; ``--keep-best``: the epoch with the
    lowest ``val_loss``), while ``final_*`` are the last epoch's logs.
    """
    from lossweave.metrics import evaluate_embeddings
    from lossweave.report import class_distance_ratio

    history, labels = result.history, result.dataset.y_test
    terms = list(result.objective.terms)
    return {
        "test_accuracy": _accuracy(result.test_logits, labels),
        "val_accuracy": _accuracy(result.val_logits, result.dataset.y_val),
        "test_loss": finite_or_none(result.test_logs["loss"]),
        "test_losses": {t: finite_or_none(result.test_logs[f"loss/{t}"]) for t in terms},
        "final_losses": {t: finite_or_none(history[f"loss/{t}"][-1]) for t in terms},
        "final_val_losses": {t: finite_or_none(history[f"val_loss/{t}"][-1]) for t in terms},
        "final_weights": {t: finite_or_none(history[f"weight/{t}"][-1]) for t in terms if f"weight/{t}" in history},
        "intra_inter_ratio": finite_or_none(class_distance_ratio(result.test_embedding, labels)),
        "embedding": {k: finite_or_none(v) for k, v in evaluate_embeddings(
            result.test_embedding, labels, metric="cosine", ks=(1, 4)).items()},
        **({"tasks": {t: {k: finite_or_none(v) for k, v in m.items()} for t, m in result.test_tasks.items()}}
           if result.test_tasks else {}),
        "epochs": len(history["loss"]),
        "kept_epoch": result.kept_epoch,
        "train_seconds": round(result.train_seconds, 3),
    }
