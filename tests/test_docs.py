"""The pages in docs/ run as written, are linked, and list every method of their family.

Conventions for a page's code blocks (docs/index.md repeats them for contributors):

* Every ```python block of a page runs. The blocks of one page run in order in ONE
  fresh Python process (a later block uses an earlier one's names, as a reader
  would), with the working directory a fresh temporary folder and JAX as the
  backend.
* ```python no-run (or the comment ``<!-- docs-test: skip -->`` on the line right
  before the fence) marks a block that is shown, not run: keep it for what one
  process cannot do (a multi-host launch, a GPU).
* ``<!-- docs-test: backend tensorflow -->`` (or torch, jax) on the line right
  before a fence runs that block under that backend. The blocks of one backend
  form their own chain (one process per backend and page, in page order): a
  custom-loop page has a JAX block and a TensorFlow block that share nothing.
* ``<!-- docs-test: env NAME=VALUE -->`` anywhere in a page sets an environment
  variable for every process of that page, e.g.
  ``<!-- docs-test: env XLA_FLAGS=--xla_force_host_platform_device_count=4 -->``
  for four virtual CPU devices (set before JAX is imported).
* ```sh / ```bash blocks are shown, not run, unless ``<!-- docs-test: run -->`` is
  on the line right before the fence: then the block runs with ``bash -e`` in the
  page's folder, after the page's JAX Python blocks (in the same test), with the
  venv's ``bin`` first on ``PATH`` (keep it cheap: a few epochs on the bundled digits).
* A methods table (header row starting ``| method |``) lists each class of the
  page's family in backticks in its first column; every ``name=value`` in
  backticks in its defaults column must equal that class's constructor default.

Every block must be cheap (tiny data, 1-2 epochs): all pages together run in
well under a minute. The pages only use public Keras 3 API, so they run in the
JAX pass only (``one_backend``); the backend a block names is set in its process.
"""

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lossweave as lw
from conftest import one_backend

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))

FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->")

# family page -> the public classes its methods table must list.
FAMILIES = {
    "center_loss.md": {"CenterLoss"},
    "margin_softmax.md": {"NormFace", "SphereFace", "CosFace", "ArcFace", "CombinedMargin", "SubCenterArcFace",
                         "ElasticArcFace", "ElasticCosFace", "AdaFace", "MagFace", "CurricularFace", "AdaCos",
                         "LargeMarginSoftmax"},
    "pair_losses.md": {
        "ContrastiveLoss", "TripletLoss", "LiftedStructureLoss", "NPairsLoss", "MultiSimilarityLoss",
        "CircleLoss", "SupConLoss", "NTXentLoss", "SiameseContrastiveLoss", "TwoViewNTXentLoss", "ProxyAnchorLoss",
        "ProxyNCALoss", "CrossBatchMemory",
        "NCALoss", "MarginLoss", "TupletMarginLoss", "AngularLoss", "GeneralizedLiftedStructureLoss",
        "IntraPairVarianceLoss", "SNRContrastiveLoss", "FastAPLoss", "SoftTripleLoss",
        "SoftNearestNeighborLoss", "HistogramLoss", "RankedListLoss", "PNPLoss", "InstanceLoss",
    },
    "self_supervised.md": {"SelfSupervisedLoss", "VICRegLoss", "BarlowTwinsLoss"},
    "multitask.md": {
        "Fixed", "Convex", "Uncertainty", "DWA", "RLW", "GLS", "FAMO",
        "Constant", "LinearWarmup", "Cosine", "Exponential", "Piecewise", "Lambda",
    },
    "gradient_methods.md": {
        "Sum", "Mean", "MGDA", "PCGrad", "CAGrad", "NashMTL", "UPGrad", "DualProj", "IMTLG",
        "AlignedMTL", "ConFIG", "GradVac", "GradDrop", "MoCo", "DBMTL", "GradNorm",
    },
}
# Public classes that are building blocks, not methods with a paper: each is
# described in the text of a page, not in a methods table.
BUILDING_BLOCKS = {
    "Term", "PairTerm", "Loss", "SoftmaxCrossEntropy", "MarginSoftmax", "MarginLogits",
    "Weighting", "GradientWeighting", "Clip", "Scaled", "LogLosses", "Schedule",
}
MODULES = (lw.terms, lw.weighting, lw.schedules)


def _public_classes():
    return {name: getattr(m, name) for m in MODULES for name in m.__all__ if inspect.isclass(getattr(m, name))}


def _blocks(text):
    """(language, info, code, directives of the line before the fence) for each fenced block."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directives = dict(DIRECTIVE.findall(before))
        blocks.append((match.group(1), match.group(2).strip(), match.group(3), directives))
    return blocks


def _chains(page):
    """The page's runnable Python blocks grouped by backend (page order kept), and its run-marked shell blocks."""
    chains, shells = {}, []
    for language, info, code, directives in _blocks((DOCS / page).read_text()):
        if language == "python" and "no-run" not in info and "skip" not in directives:
            chains.setdefault(directives.get("backend", "jax"), []).append(code)
        elif language in ("sh", "bash", "shell") and "run" in directives:
            shells.append(code)
    return chains, shells


def _page_env(page, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for kind, value in DIRECTIVE.findall((DOCS / page).read_text()):
        if kind == "env":
            name, _, setting = value.partition("=")
            env[name.strip()] = setting.strip()
    return env


def _cases():
    """(page, backend) for each backend chain; a page's run-marked shell blocks go with its JAX case."""
    cases = []
    for page in PAGES:
        chains, shells = _chains(page)
        backends = sorted(set(chains) | ({"jax"} if shells else set()))
        cases += [pytest.param(page, backend, id=f"{page}-{backend}") for backend in backends]
    return cases


def _run(args, page, backend, tmp_path):
    done = subprocess.run(args, cwd=tmp_path, env=_page_env(page, backend), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page} ({backend}) failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done.stdout


@one_backend
@pytest.mark.parametrize("page, backend", _cases())
def test_page_blocks_run(page, backend, tmp_path):
    chains, shells = _chains(page)
    if chains.get(backend):
        (tmp_path / "page.py").write_text("\n".join(chains[backend]) + "\nprint('DOCS-PAGE-DONE')\n")
        assert "DOCS-PAGE-DONE" in _run([sys.executable, "page.py"], page, backend, tmp_path)
    if backend == "jax":  # after the page's Python: a shell block may read what it wrote
        for code in shells:
            _run(["bash", "-e", "-c", code], page, backend, tmp_path)


def test_block_parser_reads_the_conventions():
    """The markers mean what the module docstring says (a broken parser would run nothing)."""
    text = (
        "<!-- docs-test: env A=1 -->\nSome text.\n```python\nx = 1\n```\n<!-- docs-test: skip -->\n```python\nboom\n```\n"
        "```python no-run\nboom\n```\n<!-- docs-test: backend tensorflow -->\n```python\ny = 2\n```\n"
        "<!-- docs-test: run -->\n```sh\necho hi\n```\n```sh\nnot run\n```\n"
    )
    blocks = _blocks(text)
    assert [(b[0], b[1], b[3]) for b in blocks] == [
        ("python", "", {}), ("python", "", {"skip": ""}), ("python", "no-run", {}),
        ("python", "", {"backend": "tensorflow"}), ("sh", "", {"run": ""}), ("sh", "", {}),
    ]
    assert DIRECTIVE.findall(text)[0] == ("env", "A=1")


def test_every_page_is_linked_from_the_readme_and_the_index():
    readme = (ROOT / "README.md").read_text()
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        assert f"docs/{page}" in readme, f"README.md does not link docs/{page}: add it to the list of pages"
        if page != "index.md":
            assert f"]({page})" in index, f"docs/index.md does not link {page}: add a line for it"


def test_links_to_docs_pages_exist():
    """Every relative link (a page, a figure) of the README and the pages points at a file."""
    sources = [ROOT / "README.md"] + [DOCS / page for page in PAGES]
    for source in sources:
        for target in re.findall(r"\]\(([\w./-]+\.(?:md|png|svg))(?:#[\w-]*)?\)", source.read_text()):
            assert (source.parent / target).is_file(), f"{source.name} links {target}, which does not exist"


def test_every_public_class_belongs_to_a_family_or_is_a_building_block():
    placed = set().union(*FAMILIES.values()) | BUILDING_BLOCKS
    missing = sorted(set(_public_classes()) - placed)
    assert not missing, (
        f"public classes {missing} have no docs page: add each to a family in tests/test_docs.py FAMILIES "
        f"and a row to that page's methods table (or to BUILDING_BLOCKS if it is not a method)"
    )
    assert placed <= set(_public_classes()), f"unknown names in FAMILIES: {sorted(placed - set(_public_classes()))}"


def _method_rows(page):
    """(class names, defaults cell) for each row of the page's methods tables."""
    rows, in_table = [], False
    for line in (DOCS / page).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            in_table = False
        elif cells[0].lower() == "method":
            in_table, header = True, [c.lower() for c in cells]
        elif in_table and not set(cells[0]) <= set(":- "):
            defaults = cells[header.index("defaults")] if "defaults" in header else ""
            rows.append((re.findall(r"`(\w+)`", cells[0]), defaults))
    return rows


@pytest.mark.parametrize("page", sorted(FAMILIES))
def test_methods_table_lists_the_family_with_the_code_defaults(page):
    classes = _public_classes()
    rows = _method_rows(page)
    listed = {name for names, _ in rows for name in names}
    assert FAMILIES[page] <= listed, f"docs/{page}: the methods table has no row for {sorted(FAMILIES[page] - listed)}"
    assert listed <= set(classes), f"docs/{page}: the methods table lists unknown classes {sorted(listed - set(classes))}"
    checked = 0
    for names, defaults in rows:
        for name, value in re.findall(r"`(\w+)=([^`]+)`", defaults):
            owners = [classes[n] for n in names if n in classes]
            params = [inspect.signature(c.__init__).parameters.get(name) for c in owners]
            assert any(p is not None for p in params), f"docs/{page}: {names} take no argument {name!r}"
            for owner, param in zip(owners, params):
                if param is not None:
                    assert param.default == ast.literal_eval(value), (
                        f"docs/{page}: {owner.__name__}({name}=...) defaults to {param.default!r}, "
                        f"the table says {value}"
                    )
                    checked += 1
    assert checked, f"docs/{page}: the methods table checks no default against the code"
