"""Write the result tables of README.md and docs/ from runs of the commands named beside them.

Each table is a block between two marker comments in its page::

    <!-- table: compare (written by benchmarks/readme_tables.py; do not edit) -->
    ...
    <!-- /table: compare -->

Everything between the markers is rendered by this script from its run of
the command the block names (settings line, table, the sentences with
numbers): edit the script, or the command's settings, never the block. The
figures of the last run are kept in ``benchmarks/readme_tables.json`` with
the settings they were run with, so that ``--check`` (and
``tests/test_doc_tables.py``) can tell without training whether every block
is what its stored run renders, and whether the stored run was made with the
committed settings (the CLI's defaults and objectives, the examples' code).

Commands (from the repository root; every run is on JAX, one thread)::

    .venv/bin/python benchmarks/readme_tables.py                 # run every table's commands, rewrite the blocks
    .venv/bin/python benchmarks/readme_tables.py --only compare  # one table (compare, metric-mnist, siamese)
    .venv/bin/python benchmarks/readme_tables.py --render        # rewrite the blocks from the stored runs only
    .venv/bin/python benchmarks/readme_tables.py --check         # exit 1 where a block or a stored setting is stale

A full run takes about 50 minutes on 2 CPU cores (compare and the demo ~1.5,
the MNIST metric-learning example, every loss x 3 seeds and the ``--normalize``
run ~45, the siamese example ~0.5). The tables:

- ``compare`` (README.md): ``lossweave compare`` with its defaults, and
  ``lossweave train`` with its defaults (what ``make demo`` runs);
- ``metric-mnist`` (docs/pair_losses.md): ``examples/metric_learning_mnist.py``
  at its defaults (every loss, 3 seeds), and with ``--normalize`` for the losses
  whose distance leaves the embedding unnormalised;
- ``siamese`` (docs/pair_losses.md): ``examples/siamese_contrastive.py``.

The benchmark tables the README and docs quote from ``benchmarks/*.md``
(step times, multi-task quality) are not run here: ``make bench`` and the
benchmark scripts write those; ``tests/test_doc_tables.py`` checks that each
quoted number is in the file it names.
"""

import argparse
import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "readme_tables.json"
RUNS = ROOT / "runs" / "readme-tables"
BACKEND = "jax"
BACKEND_NAMES = {"jax": "JAX", "tensorflow": "TensorFlow", "torch": "PyTorch"}
BLOCK = re.compile(r"<!-- table: ([\w-]+) \(written by benchmarks/readme_tables\.py; do not edit\) -->\n"
                   r"(.*?)<!-- /table: \1 -->", re.S)
ANY_MARKER = re.compile(r"<!-- /?table: ([\w-]+)")


def _block(name, body):
    return (f"<!-- table: {name} (written by benchmarks/readme_tables.py; do not edit) -->\n"
            f"{body.rstrip()}\n<!-- /table: {name} -->")


def _run(args, label):
    """Run ``args`` from the repository root on JAX, one thread; return its stdout (raise on failure)."""
    # This tree's lossweave, whatever the venv's editable install points at.
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, KERAS_BACKEND=BACKEND, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
    print(f"[{label}] {' '.join(args)}", flush=True)
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"[{label}] failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _fresh(folder):
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def _jsonable(value):
    return json.loads(json.dumps(value, default=repr))


def _prose(text):
    """A paragraph wrapped as the pages are (inline code kept on one line)."""
    return textwrap.fill(text, 88, break_on_hyphens=False, break_long_words=False)


def _f(value, digits=4):
    if isinstance(value, int) and not isinstance(value, bool):  # a count (an epoch), not a figure
        return str(value)
    return "-" if value is None else f"{value:.{digits}f}"


def _code_fingerprint(path):
    """sha256 of a script's code without its docstrings and comments (the AST): its settings and method."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- compare (README.md)
COMPARE_COMMAND = ("lossweave", "compare")
DEMO_COMMAND = ("lossweave", "train")  # what `make demo` runs, with its defaults
SKIPPED_OPTIONS = ("out", "backend", "quiet")  # where the run goes, the backend (JAX here), the printing


def _compare_settings():
    """The committed settings of ``lossweave compare`` and ``train``: every option's default, the objectives, the columns."""
    from lossweave.cli import compare, options

    columns = [[key, label] for key, label in compare.TABLE_COLUMNS if key != "train_seconds"]  # a time, not a figure
    return _jsonable({
        "backend": BACKEND,
        "compare": {o.name: o.default for o in compare.OPTIONS if o.name not in SKIPPED_OPTIONS},
        "train": {o.name: o.default for o in options.OPTIONS if o.name not in SKIPPED_OPTIONS},
        "columns": columns,
    })


def _demo_spec(train_defaults):
    weight = train_defaults["center-weight"]
    return f"{train_defaults['loss']}+center:{weight:g}" if weight else train_defaults["loss"]


def _run_compare():
    from lossweave.cli.compare import table_row

    settings = _compare_settings()
    out = _fresh(RUNS / "compare")
    _run([sys.executable, "-m", "lossweave", "compare", "--out", str(out), "--quiet"], "compare")
    results = json.loads((out / "compare.json").read_text())
    demo = _fresh(RUNS / "demo")
    _run([sys.executable, "-m", "lossweave", "train", "--out", str(demo), "--quiet"], "compare: make demo")
    demo_metrics = json.loads((demo / "metrics.json").read_text())
    keys = [key for key, _ in settings["columns"]]
    rows = {spec: {k: table_row(spec, m)[k] for k in keys if k != "objective"}
            for spec, m in results["metrics"].items()}
    return {"settings": settings, "objectives": results["objectives"], "rows": rows,
            "demo": {"test_accuracy": demo_metrics["test_accuracy"], "kept_epoch": demo_metrics.get("kept_epoch"),
                     "epochs": demo_metrics.get("epochs")}}


def _center_sentence(rows):
    """How the intra/inter ratio moves with lambda, from the rows (a sentence that says what the numbers say)."""
    if "softmax" not in rows:
        return ""
    centered = sorted((float(spec.split(":")[1]), spec) for spec in rows if spec.startswith("softmax+center:"))
    if not centered:
        return ""
    base = rows["softmax"]["intra_inter_ratio"]
    ratios = [rows[spec]["intra_inter_ratio"] for _, spec in centered]
    lambdas = ", ".join(f"{w:g}" for w, _ in centered)
    if all(r < base for r in ratios) and all(b < a for a, b in zip(ratios, ratios[1:])):
        return (f"Center loss tightens the clusters as lambda grows ({lambdas}): the intra/inter distance "
                f"ratio goes from {_f(base)} (softmax alone) to {', '.join(_f(r) for r in ratios)}.")
    if all(r < base for r in ratios):
        return (f"Center loss tightens the clusters at every lambda ({lambdas}): intra/inter distance ratio "
                f"{_f(base)} for softmax alone, {', '.join(_f(r) for r in ratios)} with the center term.")
    return (f"The intra/inter distance ratio is {_f(base)} for softmax alone and "
            f"{', '.join(_f(r) for r in ratios)} with the center term at lambda {lambdas}.")


def _render_compare(stored):
    settings = stored["settings"]
    c = settings["compare"]
    header = "| " + " | ".join(label for _, label in settings["columns"]) + " |"
    lines = [
        _prose(f"`lossweave compare` with its defaults ({c['data']}, model {c['model']}, {c['embedding-dim']}-D "
        f"embedding, {c['epochs']} epochs, batch {c['batch-size']}, seed {c['seed']}; "
        f"{BACKEND_NAMES[settings['backend']]}): the test split's figures, as its summary prints them:"),
        "",
        header,
        "|:---|" + "---:|" * (len(settings["columns"]) - 1),
    ]
    for spec in stored["objectives"]:
        row = stored["rows"][spec]
        lines.append(f"| `{spec}` | " + " | ".join(_f(row[key]) for key, _ in settings["columns"][1:]) + " |")
    spec = _demo_spec(settings["train"])
    accuracy = stored["demo"]["test_accuracy"]
    demo = (f"`make demo` (`lossweave train` with its defaults: the same data, model and seed, "
            f"objective `{spec}`) prints test accuracy {_f(accuracy)}")
    if stored["demo"].get("kept_epoch") not in (None, stored["demo"].get("epochs")):  # a best epoch kept
        demo += f" (the weights of epoch {stored['demo']['kept_epoch']} of {stored['demo']['epochs']})"
    if spec in stored["rows"]:
        same = _f(accuracy) == _f(stored["rows"][spec]["test_accuracy"])
        demo += f", {'the' if same else 'not the'} `{spec}` row's."
    else:
        demo += "."
    lines += ["", _prose(" ".join(part for part in (demo, _center_sentence(stored["rows"])) if part))]
    return "\n".join(lines)


# ---------------------------------------------------------------- metric learning on MNIST (docs/pair_losses.md)
METRIC_SCRIPT = "examples/metric_learning_mnist.py"
METRIC_FIGURES = (("recall@1", "Recall@1"), ("map@r", "MAP@R"), ("r_precision", "R-precision"), ("nmi", "NMI"))
METRIC_RUN_KEYS = ("data", "model", "epochs", "embedding_dim", "seeds", "train_images", "unseen_images",
                   "learning_rate")
REFERENCE_ROWS = ("pixels", "untrained")


def _script_settings(script):
    return {"backend": BACKEND, "script": script, "code": _code_fingerprint(ROOT / script)}


def _metric_rows(paths):
    """The stored figures of one or more runs of the example (one ``--out`` folder each, merged in order)."""
    keys = ["train_loss", *(k for k, _ in METRIC_FIGURES)]
    merged = None
    for path in paths:
        results = json.loads((Path(path) / "results.json").read_text())
        part = {key: results[key] for key in METRIC_RUN_KEYS}
        if merged is None:
            merged = part | {"rows": [], "pending": []}
        elif part != {key: merged[key] for key in METRIC_RUN_KEYS}:
            raise SystemExit(f"metric-mnist: {path} was run with other settings than {paths[0]}")
        merged["rows"] += [{"name": r["name"], "title": r["title"], "settings": r["settings"],
                            **{k: r[k] for k in keys}, **{k + "_std": r[k + "_std"] for k in keys}}
                           for r in results["rows"]]
        merged["pending"] += results.get("pending", [])
    return merged


def _below_pixels(rows):
    """The names of the trained rows whose MAP@R (as the table shows it) is not above the raw pixels'."""
    pixels = round(next(r["map@r"] for r in rows if r["name"] == "pixels"), 3)
    return [r["name"] for r in rows if r["name"] not in REFERENCE_ROWS and round(r["map@r"], 3) <= pixels]


def _unnormalized_losses():
    """The example's losses whose default distance leaves the embeddings unnormalised: its ``--normalize`` run.

    Embedding normalisation is the one fix tried, the same for each of them
    (the papers' margins are distances on the unit sphere); the losses on
    cosine similarity, the proxy losses and the softmax ones normalise inside.
    """
    import importlib.util

    from lossweave.cli import registry

    spec = importlib.util.spec_from_file_location("metric_learning_mnist", ROOT / METRIC_SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    names = []
    for name, method in example.METHODS.items():
        if registry.LOSSES[method.loss].kind != "pair":
            continue
        term = registry.build_loss(method.loss, len(example.TRAIN_CLASSES), {"mining": method.options.get("mining")})
        distance = getattr(term, "distance", None)  # a cosine has no normalize_embeddings: it normalises
        if distance is not None and distance.get_config().get("normalize_embeddings") is False:
            names.append(name)
    return names


def _run_metric():
    out = _fresh(RUNS / "metric-mnist-default")
    _run([sys.executable, METRIC_SCRIPT, "--out", str(out)], "metric-mnist default")
    fix = [name for name in _below_pixels(_metric_rows([out])["rows"]) if name in _unnormalized_losses()]
    normalized = None
    if fix:
        normalized = _fresh(RUNS / "metric-mnist-normalized")
        _run([sys.executable, METRIC_SCRIPT, "--normalize", "--no-references", "--losses", ",".join(fix),
              "--out", str(normalized)], "metric-mnist --normalize")
    return _metric_results([out], [normalized] if normalized else [])


def _metric_results(default, normalized):
    """The stored dict of the runs' ``--out`` folders: ``default`` at the defaults, ``normalized`` with
    ``--normalize`` (lists of folders, merged in order; the same settings)."""
    runs = {"default": _metric_rows(default), "normalized": _metric_rows(normalized) if normalized else None}
    if runs["normalized"]:
        runs["normalized"]["rows"] = [r for r in runs["normalized"]["rows"] if r["name"] not in REFERENCE_ROWS]
    return {"settings": _script_settings(METRIC_SCRIPT), "runs": runs}


def _cell(row, key):
    std = row[key + "_std"]
    return _f(row[key], 3) if std is None else f"{row[key]:.3f} +- {std:.3f}"


def _listing(pairs):
    return "; ".join(f"{title} ({value:.3f})" for title, value in pairs)


def _render_metric(stored):
    run, normalized = stored["runs"]["default"], stored["runs"]["normalized"]
    unit = {r["name"]: r for r in normalized["rows"]} if normalized else {}
    seeds = ", ".join(map(str, run["seeds"]))
    lines = [
        _prose(f"`python {METRIC_SCRIPT}` ({BACKEND_NAMES[stored['settings']['backend']]}; {run['data']}, model "
               f"{run['model']}, {run['epochs']} epoch{'' if run['epochs'] == 1 else 's'}, {run['train_images']:,} training images of the digits "
               f"0-6, {run['unseen_images']:,} images of the unseen digits 7-9, {run['embedding_dim']}-D embedding, "
               f"Adam {run['learning_rate']:g}, seeds {seeds}; mean +- std over the seeds; each loss at its "
               f"defaults; below it, for those not above the raw pixels whose distance leaves the embedding "
               f"unnormalised, the same with `--normalize`, a `UnitNormalization` on the embedding):"),
        "",
        "| loss | settings | " + " | ".join(label for _, label in METRIC_FIGURES) + " |",
        "|:---|:---|" + "---:|" * len(METRIC_FIGURES),
    ]
    for r in run["rows"]:
        lines.append(f"| {r['title']} | {r['settings']} | " + " | ".join(_cell(r, k) for k, _ in METRIC_FIGURES)
                     + " |")
        if r["name"] in unit:
            u = unit[r["name"]]
            lines.append(f"| {u['title']}, unit sphere | {u['settings']}, `--normalize` | "
                         + " | ".join(_cell(u, k) for k, _ in METRIC_FIGURES) + " |")

    shown = lambda v: round(v, 3)  # noqa: E731 (compare what the table shows)
    by_name = {r["name"]: r for r in run["rows"]}
    pixels, untrained = by_name["pixels"]["map@r"], by_name["untrained"]["map@r"]
    trained = [r for r in run["rows"] if r["name"] not in REFERENCE_ROWS]
    above = sorted(((r["title"], r["map@r"]) for r in trained if shown(r["map@r"]) > shown(pixels)),
                   key=lambda p: -p[1])
    rest = sorted(((r["title"], r["map@r"]) for r in trained if shown(r["map@r"]) <= shown(pixels)),
                  key=lambda p: -p[1])
    text = (f"MAP@R of the raw pixels {pixels:.3f}, of the untrained network {untrained:.3f}. "
            + (f"Not run (the run was cut short): {', '.join(run['pending'])}. " if run["pending"] else "")
            + f"{len(above)} of the {len(trained)} losses at their defaults beat the raw pixels' MAP@R"
            + (f": {_listing(above)}. " if above else ". ")
            + (f"Not above the pixels: {_listing(rest)}. " if rest else "")
            + f"Above the untrained network's: {sum(shown(r['map@r']) > shown(untrained) for r in trained)} of the "
              f"{len(trained)}. ")
    moved = [(by_name[n]["title"], by_name[n]["map@r"], u["map@r"]) for n, u in unit.items() if n in by_name]
    if moved:
        fixed = [title for title, before, after in moved if shown(before) <= shown(pixels) < shown(after)]
        text += (f"On the unit sphere (`--normalize`) MAP@R goes "
                 + "; ".join(f"from {before:.3f} to {after:.3f} for {title}" for title, before, after in moved)
                 + (f"; it lifts {', '.join(fixed)} above the pixels." if fixed else
                    "; it lifts none of them above the pixels."))
    return "\n".join(lines) + "\n\n" + _prose(text)


# ---------------------------------------------------------------- siamese pairs (docs/pair_losses.md)
SIAMESE_SCRIPT = "examples/siamese_contrastive.py"
SIAMESE_HEADER = re.compile(r"train pairs=(\d+) .*?held-out pairs=(\d+) .*?margin=(\S+) epochs=(\d+);")
SIAMESE_ROW = re.compile(r"^\s+(raw pixels|untrained network|contrastive)\s+verification accuracy (\S+) \+- (\S+)"
                         r"\s+ROC AUC (\S+)", re.M)


def _run_siamese():
    out = _run([sys.executable, SIAMESE_SCRIPT], "siamese")
    header = SIAMESE_HEADER.search(out)
    rows = {name: {"accuracy": float(a), "std": float(s), "roc_auc": float(auc)}
            for name, a, s, auc in SIAMESE_ROW.findall(out)}
    if header is None or len(rows) != 3:
        raise SystemExit(f"[siamese] cannot read the figures from its output:\n{out[-2000:]}")
    pairs, held_out, margin, epochs = header.groups()
    return {"settings": _script_settings(SIAMESE_SCRIPT), "train_pairs": int(pairs),
            "held_out_pairs": int(held_out), "margin": float(margin), "epochs": int(epochs), "rows": rows}


def _render_siamese(stored):
    r = stored["rows"]
    return _prose(f"`python {SIAMESE_SCRIPT}` trains the siamese form (two images, one extractor, the Euclidean "
            f"distance as output, margin {stored['margin']:g}) on {stored['train_pairs']:,} pairs of training "
            f"digits; on {stored['held_out_pairs']:,} pairs of test images (all ten digits, images never "
            f"trained on; {BACKEND_NAMES[stored['settings']['backend']]}, {stored['epochs']} epochs, one seed) it "
            f"reaches an LFW 10-fold verification accuracy of {r['contrastive']['accuracy']:.3f} +- "
            f"{r['contrastive']['std']:.3f} and ROC AUC {r['contrastive']['roc_auc']:.3f}, against "
            f"{r['raw pixels']['accuracy']:.3f} and {r['raw pixels']['roc_auc']:.3f} for the raw pixels' "
            f"distance and {r['untrained network']['accuracy']:.3f} and "
            f"{r['untrained network']['roc_auc']:.3f} for the untrained network.")


# ---------------------------------------------------------------- face margins on unseen digits (docs/margin_softmax.md)
FACE_OBJECTIVES = ("arcface", "cosface", "adaface", "magface", "curricular", "adacos", "elasticarc", "elasticcos")
FACE_OPTIONS = ("--data", "mnist", "--split", "unseen-classes", "--embedding-dim", "16")
FACE_SEEDS = (0, 1, 2)
FACE_FIGURES = (("verification_accuracy", "verification accuracy"), ("tar@far=1e-3", "TAR @ FAR 1e-3"),
                ("map@r", "MAP@R"))


def _face_settings():
    return _jsonable({"backend": BACKEND, "objectives": FACE_OBJECTIVES, "options": FACE_OPTIONS,
                      "seeds": FACE_SEEDS, "compare": _compare_settings()["compare"]})


def _run_face():
    import numpy as np

    per_seed = {}
    for seed in FACE_SEEDS:
        out = _fresh(RUNS / f"face-margins-{seed}")
        _run([sys.executable, "-m", "lossweave", "compare", "--objectives", ",".join(FACE_OBJECTIVES),
              *FACE_OPTIONS, "--seed", str(seed), "--out", str(out), "--quiet"], f"face-margins seed {seed}")
        per_seed[seed] = json.loads((out / "compare.json").read_text())["metrics"]
    rows = {}
    for spec in FACE_OBJECTIVES:
        values = {key: [per_seed[seed][spec]["embedding"][key] for seed in FACE_SEEDS] for key, _ in FACE_FIGURES}
        rows[spec] = {key: {"mean": float(np.mean(v)), "std": float(np.std(v))} for key, v in values.items()}
    return {"settings": _face_settings(), "rows": rows}


def _render_face(stored):
    settings = stored["settings"]
    c = settings["compare"]
    seeds = ", ".join(map(str, settings["seeds"]))
    lines = [
        _prose(f"`lossweave compare --objectives {','.join(settings['objectives'])} {' '.join(settings['options'])} "
               f"--seed S` for S = {seeds} ({BACKEND_NAMES[settings['backend']]}; model {c['model']}, "
               f"{c['epochs']} epochs, batch {c['batch-size']}; trained on the digits 0-4, evaluated on the "
               f"unseen digits 5-9; mean +- std over the seeds):"),
        "",
        "| objective | " + " | ".join(label for _, label in FACE_FIGURES) + " |",
        "|:---|" + "---:|" * len(FACE_FIGURES),
    ]
    for spec in settings["objectives"]:
        row = stored["rows"][spec]
        lines.append(f"| `{spec}` | " + " | ".join(f"{row[k]['mean']:.3f} +- {row[k]['std']:.3f}"
                                                   for k, _ in FACE_FIGURES) + " |")
    best = max(settings["objectives"], key=lambda spec: stored["rows"][spec]["map@r"]["mean"])
    return "\n".join(lines) + "\n\n" + _prose(
        f"Highest mean MAP@R: `{best}` ({stored['rows'][best]['map@r']['mean']:.3f}). Differences smaller "
        f"than the seeds' standard deviations are not a ranking.")


# ---------------------------------------------------------------- the tables
@dataclasses.dataclass(frozen=True)
class Table:
    pages: tuple      # pages (relative to the repository root) that hold the block
    run: object       # () -> the stored dict (runs the commands)
    render: object    # stored dict -> the block's body (Markdown)
    settings: object  # () -> the committed settings, compared with the stored run's


TABLES = {
    "compare": Table(("README.md",), _run_compare, _render_compare, _compare_settings),
    "metric-mnist": Table(("docs/pair_losses.md",), _run_metric, _render_metric,
                          lambda: _script_settings(METRIC_SCRIPT)),
    "siamese": Table(("docs/pair_losses.md",), _run_siamese, _render_siamese,
                     lambda: _script_settings(SIAMESE_SCRIPT)),
    "face-margins": Table(("docs/margin_softmax.md",), _run_face, _render_face, _face_settings),
}


def load_store():
    return json.loads(STORE.read_text()) if STORE.exists() else {}


def blocks(page):
    """``{table name: body}`` of the marked blocks of ``page``."""
    return {name: body for name, body in BLOCK.findall((ROOT / page).read_text(encoding="utf-8"))}


def problems(store=None):
    """What is out of date, without training: a list of sentences (empty when every block is current)."""
    store = load_store() if store is None else store
    found = []
    pages = sorted({page for table in TABLES.values() for page in table.pages})
    for page in pages:
        text = (ROOT / page).read_text(encoding="utf-8")
        unknown = sorted(set(ANY_MARKER.findall(text)) - set(TABLES))
        if unknown:
            found.append(f"{page}: markers of unknown tables {unknown}")
    for name, table in TABLES.items():
        if name not in store:
            found.append(f"{name}: no stored run in {STORE.relative_to(ROOT)}: run the script")
            continue
        settings = table.settings()
        if store[name]["settings"] != settings:
            changed = sorted(k for k in set(settings) | set(store[name]["settings"])
                             if settings.get(k) != store[name]["settings"].get(k))
            found.append(f"{name}: the stored run was made with other settings ({', '.join(changed)}) than the "
                         f"committed ones: rerun `python benchmarks/readme_tables.py --only {name}`")
        body = table.render(store[name]).rstrip() + "\n"
        for page in table.pages:
            current = blocks(page).get(name)
            if current is None:
                found.append(f"{page}: no block for table {name!r} (markers missing)")
            elif current != body:
                found.append(f"{page}: the {name!r} block differs from what its stored run renders: "
                             f"run `python benchmarks/readme_tables.py --render`")
    return found


def write_blocks(store, names):
    """Rewrite the blocks of ``names`` in their pages; print what changed."""
    for name in names:
        table = TABLES[name]
        body = table.render(store[name])
        for page in table.pages:
            path = ROOT / page
            text = path.read_text(encoding="utf-8")
            old = blocks(page).get(name)
            if old is None:
                raise SystemExit(f"{page}: no block for table {name!r}: add the two marker lines "
                                 f"{_block(name, '')!r} where it goes")
            if old == body.rstrip() + "\n":
                print(f"{page}: {name}: unchanged")
                continue
            path.write_text(BLOCK.sub(lambda m: _block(name, body) if m.group(1) == name else m.group(0), text),
                            encoding="utf-8")
            removed = [line for line in old.splitlines() if line not in body.splitlines()]
            added = [line for line in body.splitlines() if line not in old.splitlines()]
            print(f"{page}: {name}: {len(removed)} line(s) replaced")
            for line in removed:
                print(f"  - {line}")
            for line in added:
                print(f"  + {line}")


def _commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "examples"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    except OSError:
        return None
    if not head.strip():  # not a git checkout (e.g. a `git archive` of a commit)
        return None
    return head.strip() + (" + uncommitted changes in src/ or examples/" if dirty.strip() else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=tuple(TABLES), help="this table only (repeatable)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--render", action="store_true", help="rewrite the blocks from the stored runs (no training)")
    what.add_argument("--check", action="store_true", help="exit 1 when a block or a stored run is out of date")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("KERAS_BACKEND", BACKEND)
    names = args.only or list(TABLES)
    store = load_store()
    if args.check:
        found = problems(store)
        for line in found:
            print(line)
        print("every table is current" if not found else f"{len(found)} problem(s)")
        return 1 if found else 0
    if not args.render:
        for name in names:
            store[name] = {**TABLES[name].run(), "commit": _commit()}
            STORE.write_text(json.dumps(store, indent=1, sort_keys=True) + "\n")  # keep each table as it finishes
    missing = [name for name in names if name not in store]
    if missing:
        raise SystemExit(f"no stored run of {missing}: run without --render first")
    write_blocks(store, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
