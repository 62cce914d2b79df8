"""``lossweave compare``: one model and dataset under several objectives, side by side.

Each objective trains from the same seed (same split, same initial weights
where the models match, same shuffling) and gets its own run folder as
``train`` writes it; the comparison folder adds ``compare.json`` (every run's
``metrics.json`` by objective), ``features_grid.png`` (the 2-D feature
pictures side by side, as Fig. 3 of the center-loss paper shows its lambda
sweep) and ``report.html`` with one table: test accuracy, intra/inter
distance ratio, verification accuracy, recall@1 and training time.

Objectives are short specs (see ``lossweave.cli.objectives.parse_spec``):
``softmax``, ``softmax+center:0.003``, ``cosface``, ``arcface+center:0.01``,
``triplet`` (every ``--loss`` name of ``lossweave.cli.registry``), and
``+center`` without a weight under a weighting that sets the weights itself.
Every other option is ``train``'s and applies to all of them; one that none
of them uses is an error, as in ``train``.
"""

import argparse
import dataclasses
import json
import pathlib
import re
import shlex

from lossweave.cli import PROG, UsageError, options, registry
from lossweave.cli.config_file import config_toml, resolve_values
from lossweave.cli.fitting import fit_and_evaluate, run_metrics
from lossweave.cli.objectives import parse_spec
from lossweave.cli.options import Option, TrainConfig
from lossweave.cli.prepare import (apply_backend, check_applicable, check_data_options, check_objective_options,
                                   load_data)
from lossweave.cli.run_folder import config_rows, write_run

DEFAULT_OBJECTIVES = (
    "softmax",
    "softmax+center:0.001",
    "softmax+center:0.003",
    "softmax+center:0.01",
    "cosface",
    "arcface",
)


def _objectives(value):
    raw = value
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a comma-separated list of objectives; received {raw!r}.")
    for spec in value:
        parse_spec(spec)  # raises ValueError with the reason
    if len(set(value)) != len(value):
        raise ValueError(f"an objective is listed twice in {raw!r}.")
    return tuple(value)


def default_objectives(weighting):
    """:data:`DEFAULT_OBJECTIVES`; under a weighting that sets the weights itself, ``+center`` without them.

    Example:
        >>> default_objectives("mgda")
        ('softmax', 'softmax+center', 'cosface', 'arcface')
    """
    if weighting == "fixed":
        return DEFAULT_OBJECTIVES
    return tuple(dict.fromkeys(re.sub(r"\+center:[^+]*", "+center", spec) for spec in DEFAULT_OBJECTIVES))


PER_OBJECTIVE = ("loss", "center", "center-weight")  # set by each objective's spec
TRAIN_ONLY = ("tensorboard", "tensorboard-every")  # one log folder per run: train's
# What to do instead of an option of train that compare does not take.
HINTS = {
    "loss": "each objective names its loss: --objectives softmax,arcface",
    "center": "an objective adds center loss with +center: --objectives softmax,softmax+center",
    "no-center": "an objective without +center has no center term: --objectives softmax",
    "center-weight": "an objective sets the center weight: --objectives softmax,softmax+center:0.003",
    "tensorboard": "TensorBoard logs are one run's: lossweave train --tensorboard DIR",
    "tensorboard-every": "TensorBoard logs are one run's: lossweave train --tensorboard DIR",
    "resume": "compare has no backup to continue; train each objective with lossweave train",
}
# train's options without the per-objective and train-only ones,
# plus the list of objectives.
OPTIONS = (
    Option("objectives", _objectives, DEFAULT_OBJECTIVES,
           "comma-separated objectives: " + ", ".join(registry.LOSSES) + ", each optionally +center:LAMBDA",
           "LIST"),
    *(o for o in options.OPTIONS if o.name not in (*PER_OBJECTIVE, *TRAIN_ONLY)),
)
FILES = ("compare.json", "features_grid.png", "report.html")
TABLE_COLUMNS = (
    ("objective", "objective"),
    ("test_accuracy", "test accuracy"),
    ("intra_inter_ratio", "intra/inter distance"),
    ("verification_accuracy", "verification accuracy"),
    ("recall@1", "recall@1"),
    ("map@r", "MAP@R"),
    ("train_seconds", "training time (s)"),
)


def add_parser(subparsers):
    """Register ``compare`` on the top-level parser's subparsers."""
    parser = subparsers.add_parser(
        "compare",
        help="train several objectives on the same model and data; one report side by side",
        description=(
            "Train the same model on the same data under several objectives (same seed) and "
            "write a run folder per objective plus compare.json, features_grid.png and "
            "report.html with one table of test accuracy, embedding figures and training time."
        ),
        argument_default=argparse.SUPPRESS,  # only options given on the command line appear
    )
    options.add_options(parser, OPTIONS)
    parser.set_defaults(run=run, unknown_hints=HINTS)
    return parser


def _slug(spec):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.replace("+", "_plus_").replace(":", "_"))


def table_row(spec, metrics):
    """One row of the comparison table from a run's ``metrics.json`` dict."""
    embedding = metrics.get("embedding") or {}
    return {
        "objective": spec,
        "test_accuracy": metrics["test_accuracy"],
        "intra_inter_ratio": metrics["intra_inter_ratio"],
        "verification_accuracy": embedding.get("verification_accuracy"),
        "recall@1": embedding.get("recall@1"),
        "map@r": embedding.get("map@r"),
        "train_seconds": metrics["train_seconds"],
    }


def compare(base, objectives, *, argv=(), config_file=None, echo=print):
    """Train every objective on ``base``'s data and model; write the comparison folder.

    Returns:
        ``(results, paths)``: ``{spec: metrics dict}`` and ``{file name: Path}``.
    """
    import keras

    from lossweave import report

    base = dataclasses.replace(base, backend=keras.backend.backend())
    out = pathlib.Path(base.out)
    dataset = load_data(base)
    sizes = dataset.sizes()
    echo(f"{PROG} compare: {len(objectives)} objectives on {base.data} ({sizes['train']} train / "
         f"{sizes['test']} test), model {base.model}, {base.embedding_dim}-D embedding, "
         f"{base.epochs} epochs each, {base.backend} backend -> {out}")
    results, panels, runs = {}, [], {}
    for index, spec in enumerate(objectives, start=1):
        config = dataclasses.replace(base, **parse_spec(spec), out=str(out / _slug(spec)))
        echo(f"[{index}/{len(objectives)}] {spec} ...", end=" ", flush=True)
        result = fit_and_evaluate(config, dataset, verbose=0)
        metrics = run_metrics(result)
        write_run(config.out, result, metrics, argv=argv, config_file=config_file)
        results[spec], runs[spec] = metrics, config.out
        echo(f"test accuracy {_shown(metrics['test_accuracy'])}, intra/inter "
             f"{_shown(metrics['intra_inter_ratio'])}, epoch {metrics['kept_epoch']} kept, training time "
             f"{_seconds(metrics)} s")
        centers, _ = result.centers()
        panels.append({
            "title": spec,
            "features": result.test_embedding,
            "labels": dataset.y_test,
            "centers": centers,
            "subtitle": f"acc {_shown(metrics['test_accuracy'], 3)}, ratio {_shown(metrics['intra_inter_ratio'], 3)}",
        })

    paths = {name: out / name for name in FILES}
    paths["compare.json"].write_text(json.dumps(
        {"objectives": list(objectives), "runs": runs, "metrics": results}, indent=2) + "\n", encoding="utf-8")
    report.plot_feature_grid(
        panels, path=paths["features_grid.png"], class_names=dataset.class_names, seed=base.seed,
        title=f"{base.data} test features, {base.model}, {base.embedding_dim}-D, {base.epochs} epochs",
    )
    rows = [table_row(spec, metrics) for spec, metrics in results.items()]
    command = shlex.join([PROG, *argv])
    report.write_html(
        paths["report.html"],
        title=f"lossweave compare: {base.data} / {base.model}",
        command=command,
        tables=[("Objectives (test set)", TABLE_COLUMNS, rows)],
        images=[("Test features per objective (PCA if more than 2-D); centers or class means as crosses",
                 paths["features_grid.png"])],
        config=config_rows(base, used_options(base, objectives)) + [
            ("objectives", "objectives", ", ".join(objectives))],
        notes=["Same seed for every objective: same split, same shuffling. Training time: the seconds of "
               "fit (the epochs and their validation), as printed. Intra/inter distance: "
               "mean distance of a test feature to its class center over the mean distance between "
               "centers (Euclidean; lower is tighter). Verification accuracy: 10-fold LFW protocol "
               "on 6000 test pairs, cosine similarity. Each objective's own report is in its folder: "
               + ", ".join(f"{spec} -> {pathlib.Path(path).name}/" for spec, path in runs.items()) + "."],
    )
    return results, paths


def _shown(value, digits=4):
    return "-" if value is None else f"{value:.{digits}f}"


def _seconds(metrics):
    """The training time as the progress line and the summary print it: ``train_seconds``, the table's."""
    return f"{metrics['train_seconds']:.1f}"


def _summary(results):
    width = max(len(spec) for spec in results)
    lines = ["", f"  {'objective':<{width}}  {'test acc':>8}  {'intra/inter':>11}  {'verif acc':>9}  "
                 f"{'recall@1':>8}  {'train (s)':>9}"]
    for spec, metrics in results.items():
        row = table_row(spec, metrics)
        cells = [row["test_accuracy"], row["intra_inter_ratio"], row["verification_accuracy"], row["recall@1"]]
        shown = ["-" if v is None else f"{v:.4f}" for v in cells]
        lines.append(f"  {spec:<{width}}  {shown[0]:>8}  {shown[1]:>11}  {shown[2]:>9}  {shown[3]:>8}  "
                     f"{_seconds(metrics):>9}")
    return "\n".join(lines)


def used_options(base, objectives):
    """The options of ``compare`` that at least one objective's run uses (``registry.applicable_options``)."""
    used = set().union(*(registry.applicable_options(dataclasses.replace(base, **parse_spec(spec)))
                         for spec in objectives))
    return used - {*PER_OBJECTIVE, *TRAIN_ONLY}


def check_objectives(base, objectives, sources):
    """Refuse an objective's options that do not fit, and an option given (``sources``) that no objective uses."""
    for spec in objectives:  # before any training: e.g. --memory with an objective that cannot take it
        fields = parse_spec(spec)
        if "center_weight" in fields and base.weighting != "fixed":
            raise UsageError(f"objective {spec!r}: center:{fields['center_weight']:g} is the center term's fixed "
                             f"weight, used by --weighting fixed only; --weighting {base.weighting} sets the "
                             f"weights itself: write {fields['loss']}+center.")
        try:
            check_objective_options(dataclasses.replace(base, **fields))
        except UsageError as error:
            raise UsageError(f"objective {spec!r}: {error}") from None
    unused = set(sources) - used_options(base, objectives)
    if unused:
        first = dataclasses.replace(base, **parse_spec(objectives[0]))
        try:
            check_applicable(first, {name: sources[name] for name in unused})
        except UsageError as error:
            raise UsageError(f"{str(error).rstrip('.')}; none of the objectives uses it "
                             f"({', '.join(objectives)}).") from None


def run(args, *, argv=(), from_process=False):
    """The ``compare`` command: resolve options, apply the backend, train each objective, report."""
    given = {o.name: getattr(args, o.dest) for o in OPTIONS if hasattr(args, o.dest)}
    config_file = getattr(args, "config", None)
    values, sources = resolve_values(given, config_file, OPTIONS)
    objectives = values.pop("objectives")
    if sources.pop("objectives", None) is None:
        objectives = default_objectives(values["weighting"])
    base = TrainConfig(**values)
    check_data_options(base)
    check_objectives(base, objectives, sources)
    out = pathlib.Path(base.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {base.out!r} exists and is not a folder.")
    apply_backend(base.backend, argv=argv, from_process=from_process)
    if getattr(args, "print_config", False):
        import keras

        config = dataclasses.replace(base, backend=keras.backend.backend())
        print(config_toml(config, names=used_options(config, objectives))
              + f"objectives = {json.dumps(list(objectives))}")
        return 0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out: cannot create {base.out!r}: {error.strerror or error}.") from None
    echo = (lambda *a, **k: None) if base.quiet else print
    results, paths = compare(base, objectives, argv=argv, config_file=config_file, echo=echo)
    echo(_summary(results))
    print(f"report: {paths['report.html']}")
    return 0
