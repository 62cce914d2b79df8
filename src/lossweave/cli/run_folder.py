"""The run folder: ``metrics.json``, ``history.json``, ``config.toml``, the saved models, the figures, ``report.html``.

And the retrieval part (``lossweave.cli.retrieval``): the training split's
index, its calibration on the validation split and their figures.
"""

import datetime
import json
import pathlib
import platform
import shlex

from lossweave.cli import PROG, registry
from lossweave.cli.config_file import config_toml
from lossweave.cli.fitting import finite_or_none, metric_groups
from lossweave.cli.retrieval import write_retrieval


def jsonable_history(history):
    """``history`` with plain floats (``None`` for NaN and infinities), for JSON."""
    return {key: [finite_or_none(v) for v in values] for key, values in history.items()}


def objective_label(config):
    """``"softmax + 0.003 x center"``: the objective of a run in a few words."""
    center = registry.has_center(config)
    if config.weighting != "fixed":
        return f"{config.loss}{' + center' if center else ''}, {config.weighting} weighting"
    return f"{config.loss}{f' + {config.center_weight:g} x center' if center else ''}"


def config_rows(config, names=None):
    """``(key, label, value)`` rows of the options the run uses (``names``: default, ``applicable_options``).

    ``center`` shows whether the objective has a center term, given or not.
    """
    names = registry.applicable_options(config) if names is None else set(names)
    shown = {**config.to_dict(), "center": registry.has_center(config)}
    return [(key, key, value) for key, value in shown.items() if key in names]


def inference_model(result):
    """The plain model, with a margin term's margin-free logits added as an output."""
    from lossweave.cli.objectives import class_scores, classifier_name

    if class_scores(result.config.loss) != "term":
        return result.objective.model

    return result.objective.terms[classifier_name(result.config.loss)].classifier(result.objective.model)


RUN_FILES = ("metrics.json", "history.json", "config.toml", "objective.keras", "model.keras",
             "features.png", "losses.png", "report.html")


def write_run(out, result, metrics, *, argv=(), config_file=None, run_notes=None):
    """Write every file of the run folder ``out``; returns ``{file name: Path}``.

    ``run_notes`` are more ``key: value`` pairs for the ``[run]`` table of
    ``config.toml`` (e.g. the epoch a resumed run continued from).
    """
    import keras

    import lossweave as lw
    from lossweave import report

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, dataset = result.config, result.dataset
    paths = {name: out / name for name in RUN_FILES}
    command = shlex.join([PROG, *argv])

    paths["metrics.json"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    paths["history.json"].write_text(
        json.dumps(jsonable_history(result.history), indent=1) + "\n", encoding="utf-8")
    run_info = {
        "command": command,
        "argv": list(argv),
        "config-file": None if config_file is None else str(config_file),
        "backend": keras.backend.backend(),
        "lossweave": lw.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        **(run_notes or {}),
    }
    paths["config.toml"].write_text(config_toml(config, run_info), encoding="utf-8")
    result.objective.save(paths["objective.keras"])
    inference_model(result).save(paths["model.keras"])

    centers, centers_label = result.centers()
    report.plot_features(
        result.test_embedding, dataset.y_test, centers, class_names=dataset.class_names,
        title=(f"{config.data} test features, {config.model}, {objective_label(config)}, "
               f"{metrics['epochs']} epochs"),
        centers_label=centers_label, path=paths["features.png"], seed=config.seed,
    )
    report.plot_loss_curves(result.history, terms=list(result.objective.terms),
                            path=paths["losses.png"], total=registry.total_label(config.weighting),
                            title=f"{config.data} / {config.model}: loss per term")
    images = [("Test features (PCA if more than 2-D), centers as crosses", paths["features.png"]),
              ("Loss per term (train and validation)", paths["losses.png"])]
    retrieval_paths, retrieval_images, retrieval_tables, retrieval_notes = write_retrieval(
        out, result, target_precision=config.target_precision, title=f"{config.data} / {config.model}")
    paths.update(retrieval_paths)
    if report.weights_vary(result.history):
        paths["weights.png"] = out / "weights.png"
        report.plot_weight_curves(result.history, terms=list(result.objective.terms),
                                  path=paths["weights.png"],
                                  title=f"{config.weighting} weighting: weight per term")
        images.append(("Weight of each term per epoch", paths["weights.png"]))
    if report.tuple_statistics_names(result.history):  # a tuple loss: lossweave.metrics.TupleStatistics
        paths["tuples.png"] = out / "tuples.png"
        report.plot_tuple_curves(result.history, path=paths["tuples.png"],
                                 title=f"{objective_label(config)}: the batches' pairs")
        images.append(("Pair distances and active tuples of the tuple loss per epoch (collapse: the "
                       "positive and negative distances fall together)", paths["tuples.png"]))
    if report.cosine_pairs(result.history):  # a gradient-level weighting logs them
        paths["cosines.png"] = out / "cosines.png"
        report.plot_cosine_curves(result.history, terms=list(result.objective.terms),
                                  path=paths["cosines.png"],
                                  title=f"{config.weighting}: gradient cosine per pair of terms")
        images.append(("Cosine between the term gradients on the shared variables (below 0: conflict)",
                       paths["cosines.png"]))
    images += retrieval_images
    report.write_html(
        paths["report.html"],
        title=f"lossweave train: {config.data} / {config.model}",
        command=command,
        metrics=metric_groups(metrics, config),
        config=config_rows(config),
        images=images,
        tables=retrieval_tables,
        notes=[f"Backend {run_info['backend']}, keras {keras.__version__}, "
               f"lossweave {lw.__version__}.", *retrieval_notes],
    )
    return paths
