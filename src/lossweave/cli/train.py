"""``lossweave train``: one objective (a loss of ``lossweave.cli.registry``, center loss, a weighting) on one dataset.

The loss is softmax, a margin term or a pair or proxy loss (``--loss``; a
pair loss optionally inside a cross-batch memory, ``--memory``), trained on
plain batches or class-balanced P x K batches (``--classes-per-batch``,
``--samples-per-class``), on a stratified split or, for retrieval on classes
never seen in training, ``--split unseen-classes``.

The run folder holds ``metrics.json``, ``history.json``, ``config.toml`` (the
resolved configuration, reusable with ``--config``, and the command line),
``objective.keras``, ``model.keras`` (the inference model: embedding and
logits, no labels), ``features.png``, ``losses.png``, ``weights.png`` (when a
weight changes during training), ``cosines.png`` (a gradient-level weighting:
the cosine between each two terms' gradients), the retrieval part
(``lossweave.cli.retrieval``: ``index.npz``, the training split's index that
``lossweave search`` answers from; ``calibration.json``, its open-set
threshold calibrated on the validation split to ``--target-precision``;
``calibration.png`` and, on image data, ``neighbors.png``) and a
self-contained ``report.html``. While it trains it also holds ``backup/``
(``lossweave.cli.resume``): ``--resume RUN`` continues a run that was
killed. ``--tensorboard DIR`` writes every epoch's numbers as TensorBoard
scalars (``lossweave.cli.callbacks.EpochScalars``).

``--data multitask`` adds, beside the digit class, one head and one term
per other target (parity, ink, top share; ``lossweave.cli.tasks``), so the
weighting combines four terms of different kinds and scales (five with
``--center``).

With ``--keep-best`` (the default) the run evaluates and saves the weights
of the epoch with the lowest ``val_loss`` (``metrics.json``: ``kept_epoch``).
An option given that the run does not use (``registry.APPLIES``) is a usage
error, and Ctrl-C prints the command that continues the run.

Every option can also come from a TOML file (``--config FILE``) whose keys are
the option names (``embedding-dim = 2`` or ``embedding_dim = 2``); the
command line wins over the file, the file over the defaults. The options are
``lossweave.cli.options.OPTIONS``; this module wires them to the jobs of a
run: ``prepare`` (backend, seed, data, model, objective), ``fitting``
(training, evaluation, metrics), ``run_folder`` (files and report) and
``resume`` (the backup).

Keras is imported only inside functions, after ``--backend`` is applied.
"""

import dataclasses
import importlib.util
import pathlib
import shlex

from lossweave.cli import PROG, Interrupted, UsageError, resume
from lossweave.cli.config_file import config_toml, resolve_config
from lossweave.cli.fitting import fit_and_evaluate, metric_groups, run_metrics
from lossweave.cli.options import OPTIONS, add_options
from lossweave.cli.prepare import (apply_backend, check_applicable, check_data_options, check_objective_options,
                                   load_data)
from lossweave.cli.run_folder import objective_label, write_run


def add_parser(subparsers):
    """Register ``train`` on the top-level parser's subparsers."""
    import argparse

    parser = subparsers.add_parser(
        "train",
        help="train one objective and write a run folder with an HTML report",
        description=(
            "Train lossweave.Objective(model, {softmax, a margin, pair or proxy loss, center loss}) on a "
            "dataset and write metrics.json, history.json, config.toml, objective.keras, "
            "model.keras, features.png, losses.png (weights.png), the training split's index (index.npz) with "
            "its calibration (calibration.json, calibration.png, neighbors.png) and report.html to the run "
            "folder."
        ),
        argument_default=argparse.SUPPRESS,  # only options given on the command line appear
    )
    add_options(parser, OPTIONS)
    parser.add_argument("--resume", metavar="RUN",
                        help="continue the unfinished run in the folder RUN (killed or interrupted) from "
                             "its last backed-up epoch, with its saved configuration")
    parser.set_defaults(run=run)
    return parser


def check_tensorboard(config):
    """``--tensorboard`` writes with ``tf.summary``: TensorFlow must be installed (any backend)."""
    if config.tensorboard is not None and importlib.util.find_spec("tensorflow") is None:
        raise UsageError(
            f"--tensorboard {config.tensorboard}: writing TensorBoard event files needs TensorFlow, "
            "which is not installed; install it (pip install -c requirements/pins.txt tensorflow-cpu) "
            "or leave --tensorboard out.")


def train(config, *, argv=(), config_file=None, echo=print, backup=None):
    """Train, evaluate and write the run folder for a resolved ``TrainConfig``.

    Args:
        config: the ``TrainConfig``; ``config.out`` is the run folder.
        argv: the command line arguments (recorded in ``config.toml`` and the report).
        config_file: the ``--config`` file, if any (recorded).
        echo: where progress lines go (``print``, or a no-op when quiet).
        backup: the ``resume.Backup`` of the run to continue; ``None`` starts a
            new run, with a new backup in ``config.out``.

    Returns:
        ``(metrics, paths)``: the ``metrics.json`` dict and ``{file name: Path}``.
    """
    import keras

    config = dataclasses.replace(config, backend=keras.backend.backend())
    dataset = load_data(config)
    sizes = dataset.sizes()
    echo(
        f"{PROG} train: {config.data} ({sizes['train']} train / {sizes['val']} val / "
        f"{sizes['test']} test, {dataset.num_classes} classes), model {config.model}, "
        f"{config.embedding_dim}-D embedding, {objective_label(config)}, "
        f"{config.backend} backend -> {config.out}"
    )
    notes = {}
    if backup is None:
        backup = resume.Backup.start(config, argv=argv, config_file=config_file)
    else:
        notes = {"resumed-at-epoch": backup.epochs_done}
        echo(f"continuing from epoch {backup.epochs_done} of {config.epochs}")
    callbacks = []
    if config.tensorboard is not None:
        from lossweave.cli.callbacks import EpochScalars, StepScalars

        every = config.tensorboard_every
        callbacks.append(EpochScalars(config.tensorboard) if every is None else
                         StepScalars(config.tensorboard, every=every))
    try:
        result = fit_and_evaluate(config, dataset, verbose=0 if config.quiet else 2, callbacks=callbacks,
                                  backup=backup)
    except UsageError:  # a bad model file or option value, found before any epoch: nothing to resume
        if not notes:
            backup.remove()
        raise
    metrics = run_metrics(result)
    if config.keep_best:
        echo(f"kept the weights of epoch {metrics['kept_epoch']} of {metrics['epochs']}, the lowest validation "
             "loss (--no-keep-best keeps the last epoch's)")
    paths = write_run(config.out, result, metrics, argv=argv, config_file=config_file, run_notes=notes)
    backup.remove()  # every file is written: the run is finished
    return metrics, paths


def _summary(metrics, paths, config):
    from lossweave.report import format_value

    groups = metric_groups(metrics, config)  # the report's groups, in its order
    width = max(len(label) for rows in groups.values() for _, label, _ in rows)
    lines = ["", "summary"]
    for group, rows in groups.items():
        lines.append(f"  {group}")
        lines += [f"    {label:<{width}}  {format_value(value):>10}" for _, label, value in rows]
    lines.append(f"  {'run folder':<{width + 2}}  {paths['report.html'].parent}")
    return "\n".join(lines)


def run(args, *, argv=(), from_process=False):
    """The ``train`` command: resolve options, apply the backend, train, report."""
    given = {o.name: getattr(args, o.dest) for o in OPTIONS if hasattr(args, o.dest)}
    config_file = getattr(args, "config", None)
    backup, recorded_argv = None, argv
    if getattr(args, "resume", None) is not None:
        config, recorded_argv, config_file, backup = resume.resume(args.resume, given, config_file)
        explicit = list(given)  # the saved configuration holds only the options the run uses
    else:
        config, explicit = resolve_config(given, config_file)
        resume.check_new(config.out)
    check_data_options(config)
    check_objective_options(config)
    check_applicable(config, explicit)
    check_tensorboard(config)
    out = pathlib.Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {config.out!r} exists and is not a folder.")
    apply_backend(config.backend, argv=argv, from_process=from_process)
    if getattr(args, "print_config", False):
        import keras

        print(config_toml(dataclasses.replace(config, backend=keras.backend.backend())), end="")
        return 0
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out: cannot create {config.out!r}: {error.strerror or error}.") from None

    echo = (lambda *a, **k: None) if config.quiet else print
    try:
        metrics, paths = train(config, argv=recorded_argv, config_file=config_file, echo=echo, backup=backup)
    except UsageError:  # found before training (a bad model file, ...): leave no empty run folder behind
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    except KeyboardInterrupt:
        if resume.backup_folder(out).is_dir():  # the backup is written: the run can go on from it
            raise Interrupted(shlex.join([PROG, "train", "--resume", str(config.out)])) from None
        raise
    echo(_summary(metrics, paths, config))
    print(f"report: {paths['report.html']}")
    return 0
