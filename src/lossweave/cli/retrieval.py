"""The run folder's retrieval part: the reference set's index, its calibration, the report's two figures.

``lossweave train`` keeps, beside the models:

* ``index.npz``: a :class:`lossweave.retrieval.Index` (cosine, as the
  embedding figures of ``metrics.json``) of the **training split's**
  embeddings and labels: the enrolled references that ``lossweave search``
  answers from;
* ``calibration.json``: the threshold sweep of the **validation split**
  against that index (:func:`lossweave.retrieval.calibrate`), and the
  threshold ``search`` uses: the largest that reaches ``--target-precision``
  on it, else (a precision no threshold reaches) the best-F1 one, with the
  class names of the labels;
* ``calibration.png``: the curve (precision, recall, F1, FAR against the
  threshold), and ``neighbors.png`` on image data: a few test queries with
  their nearest references, marked right or wrong, and the open-set answer.

Under ``--split unseen-classes`` the test classes are not enrolled: their
right answer is "unknown", and the tiles show whether the threshold says so.
"""

import json
import pathlib

import numpy as np

INDEX = "index.npz"
CALIBRATION = "calibration.json"
METRIC = "cosine"  # the metric of metrics.json's embedding figures
TILE_QUERIES = 6
TILE_NEIGHBORS = 5
UNKNOWN = -1


def embed(model, x, batch_size):
    """The ``"embedding"`` output of ``model`` on ``x``, as float32 NumPy."""
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(outputs["embedding"] if isinstance(outputs, dict) else outputs, dtype="float32")


def chosen_threshold(calibration):
    """``(threshold, "precision" or "f1")``: the target precision's threshold, else the best F1's."""
    if calibration.precision_threshold is not None:
        return calibration.precision_threshold, "precision"
    return calibration.f1_threshold, "f1"


def read_calibration(run):
    """``(Calibration, calibration.json's dict)`` of the run folder ``run``."""
    from lossweave.retrieval import Calibration

    data = json.loads((pathlib.Path(run) / CALIBRATION).read_text(encoding="utf-8"))
    return Calibration.from_dict(data["calibration"]), data


def _tile_queries(labels, seed, count=TILE_QUERIES):
    """Rows of ``labels`` to show: one of each of up to ``count`` classes (seeded), then more rows."""
    if len(labels) == 0:
        return np.zeros((0,), "int64")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:count]
    rows = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
    rest = [r for r in rng.permutation(len(labels)) if r not in rows]
    return np.asarray((rows + rest)[:min(count, len(labels))], dtype="int64")


def write_retrieval(out, result, *, target_precision, title):
    """Write ``index.npz``, ``calibration.json``, ``calibration.png`` (and ``neighbors.png``) to ``out``.

    Args:
        out: the run folder.
        result: the run's ``lossweave.cli.fitting.TrainResult``.
        target_precision: the precision the threshold must reach on the validation split.
        title: the figures' title prefix.

    Returns:
        ``(paths, images, tables, notes)``: ``{file name: Path}``, the
        report's ``(caption, path)`` pairs, its table of the calibrated
        thresholds and its notes. Embeddings the index refuses (NaN or
        infinite: a diverged run; all-zero rows, which have no cosine) or a
        run without validation rows write no retrieval files, and the note
        says why: the rest of the run folder is still written.
    """
    from lossweave import report
    from lossweave.report.retrieval import image_shape, plot_calibration, plot_neighbors
    from lossweave.retrieval import Index, sweep
    from lossweave.retrieval.matching import answer

    out = pathlib.Path(out)
    config, dataset, model = result.config, result.dataset, result.objective.model
    index = Index(metric=METRIC)
    if len(dataset.y_val) == 0:
        return {}, [], [], ["No retrieval index or calibration: the run has no validation rows to calibrate on."]
    try:
        index.add(embed(model, dataset.x_train, config.batch_size), labels=np.asarray(dataset.y_train, "int64"))
    except ValueError as error:
        return {}, [], [], [f"No retrieval index or calibration: {error}"]
    paths = {INDEX: out / INDEX}
    index.save(paths[INDEX])

    # One search answers the validation queries (calibration) and the test queries of the tiles: the
    # exact search compiles once per shape, so one call instead of two saves a compilation.
    shape = image_shape(dataset.input_shape, dataset.name)
    rows = _tile_queries(dataset.y_test, config.seed) if shape is not None else np.zeros((0,), "int64")
    x = dataset.x_val if rows.size == 0 else np.concatenate([dataset.x_val, dataset.x_test[rows]])
    found = index.search(embed(model, x, config.batch_size), min(TILE_NEIGHBORS, len(index)))
    val = len(dataset.y_val)
    calibration = sweep(found.distances[:val], found.labels[:val], dataset.y_val,
                        target_precision=target_precision, metric=index.metric)
    threshold, source = chosen_threshold(calibration)
    paths[CALIBRATION] = out / CALIBRATION
    paths[CALIBRATION].write_text(json.dumps({
        "threshold": threshold,
        "threshold_from": source,
        "references": "train split",
        "queries": "validation split",
        "class_names": list(dataset.class_names),
        "calibration": calibration.to_dict(),
    }, indent=1) + "\n", encoding="utf-8")
    reached = (f"precision >= {target_precision:g}" if source == "precision"
               else f"best F1 (no threshold reaches precision {target_precision:g})")
    paths["calibration.png"] = out / "calibration.png"
    plot_calibration(calibration, threshold=threshold, path=paths["calibration.png"],
                     title=f"{title}: calibration on the validation split")
    images = [(f"Open-set calibration on the validation split against the training split's index ({METRIC}); "
               f"threshold {report.format_value(threshold)}: {reached}", paths["calibration.png"])]

    if rows.size:
        distances, labels, indices = found.distances[val:], found.labels[val:], found.indices[val:]
        paths["neighbors.png"] = out / "neighbors.png"
        plot_neighbors(dataset.x_test[rows], dataset.y_test[rows], dataset.x_train[indices], labels, distances,
                       shape=shape, answers=answer(distances, labels, threshold, unknown=UNKNOWN),
                       enrolled=np.unique(dataset.y_train),
                       class_names=dataset.class_names, unknown=UNKNOWN, path=paths["neighbors.png"],
                       title=f"{title}: test queries and their nearest training references")
        images.append(("Test queries (left; the open-set answer at the threshold) and their nearest "
                       "training references, framed green when of the query's class, red when not",
                       paths["neighbors.png"]))
    return paths, images, [threshold_table(calibration, threshold)], []


def threshold_table(calibration, threshold):
    """The report's table: the figures on the validation split at each calibrated threshold and the one in use."""
    from lossweave.retrieval.matching import FIGURES

    rows = []
    for name, label in (("precision", f"precision >= {calibration.target_precision:g}"),
                        ("far", f"FAR <= {calibration.target_far:g}"), ("f1", "best F1")):
        point = calibration.cutpoints[name]
        rows.append({"target": label, **(point or {"threshold": None})})
    rows.append({"target": "in use (lossweave search)", **calibration.at(threshold)})
    columns = [("target", "threshold for"), ("threshold", "threshold"),
               *[(figure, {"far": "FAR", "f1": "F1"}.get(figure, figure)) for figure in FIGURES]]
    rows = [{key: row.get(key) for key, _ in columns} for row in rows]
    return ("Open-set threshold (validation split)", columns, rows)
