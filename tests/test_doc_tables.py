"""The result tables of README.md and docs/ are what their commands print, checked without training.

``benchmarks/readme_tables.py`` writes the blocks between ``<!-- table: NAME ... -->``
markers from its runs of the commands beside them (``lossweave compare`` and
``train``, the metric-learning and siamese examples) and keeps the runs' figures
and settings in ``benchmarks/readme_tables.json``. These tests fail when a block
is not what its stored run renders (a number edited by hand, a column added to
``compare``), when the stored run was made with other settings than the committed
ones (a CLI default, an objective, an example's code), and when a number the README
or a docs page quotes from a ``benchmarks/*.md`` results file is not in that file.
The fix is named in each message; the full rerun is
``.venv/bin/python benchmarks/readme_tables.py``.
"""

import copy
import importlib.util
import re
from pathlib import Path

import pytest

from conftest import one_backend

ROOT = Path(__file__).resolve().parents[1]

pytestmark = one_backend  # text and settings only: the same on every backend


def _tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _tables()


def test_every_table_is_what_its_stored_run_renders_with_the_committed_settings():
    found = tables.problems()
    assert not found, "result tables out of date:\n" + "\n".join(found)


def test_compare_table_lists_the_objectives_and_columns_of_lossweave_compare():
    """The README's compare table has one row per default objective, in order, and compare's columns but time."""
    from lossweave.cli import compare

    body = tables.blocks("README.md")["compare"]
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", row).group(1) for row in rows] == list(compare.DEFAULT_OBJECTIVES)
    header = next(line for line in body.splitlines() if line.startswith("| objective"))
    expected = [label for key, label in compare.TABLE_COLUMNS if key != "train_seconds"]
    assert [cell.strip() for cell in header.strip("|").split("|")] == expected


def test_the_check_sees_a_changed_setting_and_a_hand_edited_number():
    """The fast check is not vacuous: another default or an edited figure is reported."""
    store = tables.load_store()
    changed = copy.deepcopy(store)
    changed["compare"]["settings"]["compare"]["epochs"] += 1
    assert any("other settings (compare)" in line for line in tables.problems(changed))
    edited = copy.deepcopy(store)
    first = edited["compare"]["objectives"][0]
    edited["compare"]["rows"][first]["test_accuracy"] += 0.01
    assert any("'compare' block differs" in line for line in tables.problems(edited))
    edited = copy.deepcopy(store)
    edited["metric-mnist"]["settings"]["code"] = "0" * 16
    assert any(line.startswith("metric-mnist: the stored run was made") for line in tables.problems(edited))


def test_compare_sentences_follow_the_numbers():
    rows = {"softmax": {"intra_inter_ratio": 0.2}, "softmax+center:0.001": {"intra_inter_ratio": 0.15},
            "softmax+center:0.01": {"intra_inter_ratio": 0.1}}
    assert tables._center_sentence(rows).startswith("Center loss tightens the clusters as lambda grows")
    rows["softmax+center:0.01"]["intra_inter_ratio"] = 0.25
    assert tables._center_sentence(rows).startswith("The intra/inter distance ratio is 0.2000")


# Numbers the README and docs quote from a results file of benchmarks/ (not run by the script above):
# (page, the quoting text's first words, where it ends, the results files it quotes).
QUOTES = [
    ("README.md", "### Center loss", "<!-- table: compare", ["benchmarks/RESULTS.md"]),
    ("README.md", "### Margin softmax", "### Pair losses", ["benchmarks/MARGIN.md"]),
    ("README.md", "### Pair losses", "Retrieval quality", ["benchmarks/PAIRS.md"]),
    ("README.md", "### Retrieval", "### Multi-task weighting", ["benchmarks/RETRIEVAL.md"]),
    ("README.md", "### Multi-task weighting", "## Command line", ["benchmarks/MULTITASK.md", "benchmarks/GRADIENT.md"]),
    ("docs/gradient_methods.md", "## Cost", "## The two-objective toy",
     ["benchmarks/GRADIENT.md", "benchmarks/MULTITASK.md"]),
    ("docs/scale.md", "What it saves here", "## Sharded class tables", ["benchmarks/CLASSES.md"]),
    ("docs/multitask.md", "the README's multi-task table", "\n", ["benchmarks/MULTITASK.md"]),
]
QUOTED = re.compile(r"(?<![\w.^])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.^])\d+\.\d+")  # measured: 1,257 or 0.71
SOURCE = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _decimals(number):
    return len(number.split(".")[1]) if "." in number else 0


def unquoted(text, source):
    """Numbers of ``text`` that no number of ``source`` gives when rounded to as many decimals."""
    have = [(float(n.replace(",", "")), _decimals(n)) for n in SOURCE.findall(source)]
    missing = []
    for number in QUOTED.findall(text):
        value, digits = float(number.replace(",", "")), _decimals(number)
        # within half a unit of the quote's last digit, plus half a unit of the source's (a value the source
        # printed as 12.15 may be quoted as 12.1 from the unrounded 12.148)
        if not any(abs(value - s) <= 0.5 * 10 ** -digits + 0.5 * 10 ** -d + 1e-9 for s, d in have):
            missing.append(number)
    return missing


def test_unquoted_finds_a_number_the_source_lacks():
    assert unquoted("1.01x, 1,257x and 0.449", "| 1.013x | 1,257x | 0.4495 |") == []
    assert unquoted("1.29x and 0.71 ms", "| 1.24x | 0.707 |") == ["1.29"]


@pytest.mark.parametrize("page, start, end, sources", QUOTES, ids=[f"{q[0]}:{q[1]}" for q in QUOTES])
def test_quoted_benchmark_numbers_are_in_the_results_file(page, start, end, sources):
    text = (ROOT / page).read_text(encoding="utf-8")
    begin = text.index(start)
    quoted = text[begin : text.index(end, begin + len(start))]
    source = "\n".join((ROOT / name).read_text(encoding="utf-8") for name in sources)
    missing = unquoted(quoted, source)
    assert not missing, (
        f"{page} ({start!r}) quotes {missing}, which {', '.join(sources)} does not hold: copy the numbers "
        f"of the latest run from there (or rerun its benchmark and update both)"
    )
