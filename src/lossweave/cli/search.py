"""``lossweave search RUN --data FILE``: answer queries from a file with a trained run's index.

The queries are raw inputs, as the run was trained on (an ``.npz`` file with
an array ``x``, and optionally ``y``, their labels; or an ``.npy`` file of
``x``); uint8 images are divided by 255 as ``lossweave train``'s file
loaders do. The run folder's ``model.keras`` embeds them, its ``index.npz``
(the training split: ``lossweave.cli.retrieval``) is searched for each
query's ``--k`` nearest references, and the open-set answer is the nearest
reference's class, or ``unknown`` beyond the threshold (default: the run's
calibrated one, ``calibration.json``; ``--threshold`` overrides it).

Output: a table on stdout (query, answer, distance of the nearest, the k
neighbours' classes and distances), or ``--out FILE`` (``.json`` or
``.csv``). With labels in the file, the precision, recall, F1, FAR and
accuracy at the threshold follow
(:func:`lossweave.retrieval.matching.classification`); a label that is no
class of the run is a query that should be answered ``unknown``.

Keras is imported only inside :func:`run`, after ``--backend`` is applied.
"""

import argparse
import csv
import json
import math
import pathlib

import numpy as np

from lossweave.cli import PROG, UsageError
from lossweave.cli.options import BACKENDS, _choice, _integer, _parser_type, _real
from lossweave.cli.retrieval import CALIBRATION, INDEX, UNKNOWN, embed, read_calibration

RUN_FILES = ("model.keras", INDEX, CALIBRATION)
OUTPUTS = (".json", ".csv")


def _threshold(value):
    """A number (``inf`` accepts every answer, ``-inf`` none)."""
    raw = value
    try:
        value = float(str(value).strip())
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise ValueError(f"expected a distance threshold (a number; inf accepts every answer); received {raw!r}.")
    return value


def add_parser(subparsers):
    """Register ``search`` on the top-level parser's subparsers."""
    parser = subparsers.add_parser(
        "search",
        help="answer queries from a file with a trained run's index: nearest references and open-set labels",
        description=(
            "Embed the queries of FILE with RUN's model.keras, search RUN's index of the training split for "
            "each query's k nearest references and answer the nearest one's class, or unknown beyond the "
            "threshold (default: RUN's calibration.json). With labels in FILE, print precision, recall, F1, "
            "FAR and accuracy at the threshold."
        ),
    )
    parser.add_argument("run_folder", metavar="RUN", help="a run folder of lossweave train")
    parser.add_argument("--data", metavar="FILE", required=True,
                        help=".npz with x (the queries, raw inputs as in training) and optionally y (their "
                             "labels), or .npy of x")
    parser.add_argument("--k", type=_parser_type(_integer(1)), default=5, metavar="K",
                        help="nearest references listed per query (default: 5)")
    parser.add_argument("--threshold", type=_parser_type(_threshold), default=None, metavar="T",
                        help="largest distance answered with a class, beyond it unknown (default: the run's "
                             "calibrated threshold, calibration.json)")
    parser.add_argument("--out", metavar="FILE", help="write the answers to FILE (.json or .csv) instead of a table")
    parser.add_argument("--batch-size", type=_parser_type(_integer(1)), default=256, metavar="N",
                        help="batch size of the embedding (default: 256)")
    parser.add_argument("--backend", choices=BACKENDS, type=_parser_type(_choice(lambda: list(BACKENDS), "backend")),
                        metavar="NAME", help="Keras backend (default: KERAS_BACKEND or Keras's configured one)")
    parser.add_argument("--quiet", action="store_true", help="print only the figures (or the --out path)")
    parser.set_defaults(run=run)
    return parser


def check_run(folder):
    """The run folder as a Path, or a usage error naming what is missing."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UsageError(f"RUN: {str(folder)!r} is not a folder; give the run folder of lossweave train "
                         "(its --out).")
    missing = [name for name in RUN_FILES if not (folder / name).exists()]
    if missing:
        raise UsageError(f"RUN: {str(folder)!r} has no {', '.join(missing)}; give a finished run folder of "
                         "lossweave train (runs written before the retrieval index have none: train again).")
    return folder


def read_queries(path):
    """``(x, y or None)`` of the query file: ``.npz`` (``x``, optional ``y``) or ``.npy`` (``x``)."""
    from lossweave.data import DataError, _files
    from lossweave.data.npz import _read

    path = str(path)
    try:
        if path.endswith(".npy"):
            if not pathlib.Path(path).is_file():
                raise _files.fail(path, "expected an .npy file of queries, found no such file")
            try:
                arrays = {"x": np.load(path, allow_pickle=False)}
            except (ValueError, OSError) as error:
                raise _files.fail(path, f"expected a plain numeric .npy array, found: {error}") from None
        else:
            arrays = _read(path)
        if "x" not in arrays:
            has = ", ".join(f"{k} {arrays[k].shape}" for k in sorted(arrays)) or "no arrays"
            raise _files.fail(path, f"expected an array 'x' of queries (and optionally 'y'), found: {has}")
        x = _files.as_features(arrays["x"], path, "x")
        y = None
        if "y" in arrays:
            y = arrays["y"]
            y = y.astype(str) if y.dtype.kind in "US" else _files.as_labels(y, path, "y")
            _files.check_counts(x, y, path, "x", "y")
    except DataError as error:
        raise UsageError(f"--data: {error}") from None
    if len(x) == 0:
        raise UsageError(f"--data: {path}: expected at least one query, found none.")
    return x, y


def run_labels(y, class_names):
    """The query labels as the run's class numbers; a value that is no class name becomes ``UNKNOWN``.

    Example:
        >>> run_labels(np.array([3, 7, 42]), ("3", "7")).tolist()
        [0, 1, -1]
    """
    number = {name: i for i, name in enumerate(class_names)}
    return np.array([number.get(str(v), UNKNOWN) for v in np.asarray(y).tolist()], dtype="int64")


def _name(label, class_names):
    return "unknown" if label == UNKNOWN else str(class_names[label])


def answer_rows(result, answers, class_names):
    """One dict per query: its answer and its neighbours (class, distance, row of the training split)."""
    rows = []
    for i, answer in enumerate(answers.tolist()):
        rows.append({
            "query": i,
            "answer": _name(answer, class_names),
            "distance": float(result.distances[i, 0]),
            "neighbors": [{"class": _name(int(label), class_names), "distance": float(distance),
                           "reference": int(reference)}
                          for label, distance, reference in zip(result.labels[i].tolist(),
                                                                result.distances[i].tolist(),
                                                                result.indices[i].tolist())],
        })
    return rows


def _table(rows):
    lines = [f"{'query':>6}  {'answer':<10}  {'distance':>10}  nearest (class distance)"]
    for row in rows:
        near = " | ".join(f"{n['class']} {n['distance']:.4g}" for n in row["neighbors"])
        lines.append(f"{row['query']:>6}  {row['answer']:<10}  {row['distance']:>10.4g}  {near}")
    return "\n".join(lines)


def _write(path, rows, summary):
    path = pathlib.Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps({**summary, "answers": rows}, indent=1) + "\n", encoding="utf-8")
        return
    k = len(rows[0]["neighbors"])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "answer", "distance",
                         *[f"{what}_{j + 1}" for j in range(k) for what in ("class", "distance", "reference")]])
        for row in rows:
            writer.writerow([row["query"], row["answer"], row["distance"],
                             *[n[key] for n in row["neighbors"] for key in ("class", "distance", "reference")]])


def search(folder, x, y=None, *, k=5, threshold=None, batch_size=256):
    """Answer the queries ``x`` with the run folder ``folder``'s model and index.

    Returns:
        ``(rows, summary)``: :func:`answer_rows`'s dicts and ``{"threshold",
        "threshold_from", "metric", "references", "k", "evaluation"}``
        (``evaluation``: the figures at the threshold when ``y`` is given, else ``None``).
    """
    import keras

    import lossweave  # noqa: F401  (registers the classes model.keras may hold)
    from lossweave.retrieval import Index
    from lossweave.retrieval.matching import answer, classification

    calibration, saved = read_calibration(folder)
    model = keras.saving.load_model(folder / "model.keras")
    index = Index.load(folder / INDEX)
    if calibration.metric is not None and calibration.metric != index.metric:
        raise UsageError(f"RUN: calibration.json was calibrated on {calibration.metric} distances but the index "
                         f"searches {index.metric}; train the run again.")
    expected = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if expected is not None and tuple(x.shape[1:]) != expected:
        raise UsageError(f"--data: the queries have samples of shape {tuple(x.shape[1:])}; the run's model takes "
                         f"{expected}.")
    source = "--threshold" if threshold is not None else saved["threshold_from"]
    threshold = saved["threshold"] if threshold is None else threshold
    result = index.search(embed(model, x, batch_size), min(k, len(index)))
    class_names = saved["class_names"]
    answers = answer(result.distances, result.labels, threshold, unknown=UNKNOWN)
    evaluation = None
    if y is not None:
        labels = run_labels(y, class_names)
        evaluation = {"queries": int(len(labels)), "unknown_queries": int(np.sum(labels == UNKNOWN)),
                      **classification(result.distances, result.labels, labels, threshold)}
    summary = {"threshold": threshold, "threshold_from": source, "metric": index.metric,
               "references": len(index), "k": int(result.indices.shape[1]), "evaluation": evaluation}
    return answer_rows(result, answers, class_names), summary


def run(args, *, argv=(), from_process=False):
    """The ``search`` command: check the run and the file, apply the backend, search, print or write."""
    from lossweave.cli.prepare import apply_backend

    folder = check_run(args.run_folder)
    if args.out is not None and pathlib.Path(args.out).suffix not in OUTPUTS:
        raise UsageError(f"--out {args.out}: expected a .json or .csv file name.")
    x, y = read_queries(args.data)
    apply_backend(args.backend, argv=argv, from_process=from_process)
    rows, summary = search(folder, x, y, k=args.k, threshold=args.threshold, batch_size=args.batch_size)
    echo = (lambda *a, **k: None) if args.quiet else print
    origin = {"precision": "calibrated on the validation split: the target precision",
              "f1": "calibrated on the validation split: the best F1, as no threshold reaches the target precision",
              "--threshold": "--threshold"}[summary["threshold_from"]]
    echo(f"{PROG} search: {len(rows)} queries from {args.data}, {summary['references']} references "
         f"({summary['metric']}), threshold {summary['threshold']:.6g} ({origin})")
    if args.out is None:
        echo(_table(rows))
    else:
        _write(args.out, rows, summary)
        print(f"answers: {args.out}")
    evaluation = summary["evaluation"]
    if evaluation is not None:
        print(f"{evaluation['queries']} labelled queries ({evaluation['unknown_queries']} of no class of the run): "
              + ", ".join(f"{name} {evaluation[key]:.4f}" for key, name in
                          (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("far", "FAR"),
                           ("accuracy", "accuracy"))))
    return 0
