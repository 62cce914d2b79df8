"""A self-contained HTML page for a run: tables, the command, images inlined as base64 PNG."""

import base64
import datetime
import html
import math
import numbers
import pathlib

import numpy as np


def format_value(value):
    """How a value is shown in a report: numbers with 4 decimals (or 4 significant digits).

    Example:
        >>> format_value(0.912345), format_value(1234.5678), format_value(3e-07), format_value(True)
        ('0.9123', '1234.5678', '3e-07', 'true')
    """
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def _exact(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


def _groups(rows):
    """``[(heading, rows)]`` of ``(key, label, value)`` rows or ``{heading: rows}``, empty groups left out."""
    groups = rows.items() if isinstance(rows, dict) else [(None, rows)]
    groups = [(heading, list(group)) for heading, group in groups]
    return [(heading, group) for heading, group in groups if group]


def _table(groups, css_class, attribute, formatter):
    """``groups``: ``(heading, rows)`` pairs (see ``_groups``); the key goes in the ``attribute`` of the cell."""
    out = [f'<table class="{css_class}">']
    for heading, group in groups:
        if heading is not None:
            out.append(f'<tr class="group"><th colspan="2">{html.escape(str(heading))}</th></tr>')
        for key, label, value in group:
            out.append(
                f'<tr><th>{html.escape(str(label))}</th>'
                f'<td {attribute}="{html.escape(str(key), quote=True)}">'
                f"{html.escape(formatter(value))}</td></tr>"
            )
    out.append("</table>")
    return "\n".join(out)


def _columns(columns, heading):
    out = []
    for column in columns:
        if isinstance(column, str):
            out.append((column, column))
        elif isinstance(column, (tuple, list)) and len(column) == 2:
            out.append((str(column[0]), str(column[1])))
        else:
            raise ValueError(
                f"table {heading!r}: expected each column a key string or a (key, label) pair; "
                f"received {column!r}."
            )
    if not out:
        raise ValueError(f"table {heading!r}: expected at least one column; received none.")
    return out


def _wide_table(heading, columns, rows):
    """A table with a header row; cell ``data-key`` is ``<row key>/<column key>``."""
    columns = _columns(columns, heading)
    keys = [key for key, _ in columns]
    out = ['<table class="wide">', "<tr>"]
    out += [f'<th data-column="{html.escape(key, quote=True)}">{html.escape(label)}</th>'
            for key, label in columns]
    out.append("</tr>")
    seen = set()
    for row in rows:
        if isinstance(row, dict):
            unknown = sorted(set(row) - set(keys), key=str)
            if unknown:
                raise ValueError(
                    f"table {heading!r}: row has keys {unknown} that are not columns {keys}."
                )
            values = [row.get(key) for key in keys]
        else:
            values = list(row)
            if len(values) != len(keys):
                raise ValueError(
                    f"table {heading!r}: expected {len(keys)} values per row (columns {keys}); "
                    f"received {len(values)}: {values!r}."
                )
        row_key = format_value(values[0])
        if row_key in seen:
            raise ValueError(
                f"table {heading!r}: two rows have the key {row_key!r} (the first column); "
                "give each row a distinct first value."
            )
        seen.add(row_key)
        out.append("<tr>")
        for key, value in zip(keys, values):
            text = isinstance(value, str) or value is None
            cell_class = ' class="text"' if text else ""
            data_key = html.escape(f"{row_key}/{key}", quote=True)
            out.append(f'<td{cell_class} data-key="{data_key}">'
                       f"{html.escape(format_value(value))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out)


def _image(path_or_bytes, caption):
    data = path_or_bytes
    if not isinstance(data, (bytes, bytearray)):
        data = pathlib.Path(data).read_bytes()
    encoded = base64.b64encode(bytes(data)).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption, quote=True)}" '
        f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
pre { background: #f4f4f4; padding: .6em .8em; overflow-x: auto; }
pre.command { white-space: pre-wrap; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .9em; text-align: left; }
td { font-family: ui-monospace, monospace; text-align: right; }
td.text { font-family: inherit; text-align: left; }
table.wide th { border-bottom: 2px solid #bbb; }
tr.group th { padding-top: .9em; border-bottom: 2px solid #bbb; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
footer { color: #777; font-size: .85em; margin-top: 2em; }
"""


def render_html(*, title, command=None, metrics=(), config=(), images=(), notes=(), tables=()):
    """The report page as a string.

    Args:
        title: page title.
        command: the command line that made the run (wrapped, never clipped).
        metrics: ``(key, label, value)`` rows of the metrics table (numbers
            shown by ``format_value``); ``key`` is written in each cell's
            ``data-key`` attribute for machine reading. A dict
            ``{group heading: rows}`` groups them: one table, each group's
            rows under a heading row (e.g. classification, losses, embedding).
        config: ``(key, label, value)`` rows of the configuration table, values
            shown exactly, keys in ``data-option`` attributes (grouped by a
            dict as ``metrics``).
        images: ``(caption, png)`` pairs; ``png`` is a path or the PNG bytes.
        notes: paragraphs of plain text shown under the title.
        tables: ``(heading, columns, rows)`` triples, each a table with a
            header row shown after the metrics (e.g. one row per objective of
            a comparison). ``columns``: column keys, or ``(key, label)``
            pairs. ``rows``: dicts ``{column key: value}`` (a missing key shows
            "-") or sequences of values in column order. The first column's
            value (shown by ``format_value``) is the row key; each cell has
            ``data-key="<row key>/<column key>"`` and shows its value by
            ``format_value``.

    The page needs nothing from the network: images are inlined and there are
    no external styles or scripts.

    Raises:
        ValueError: a table with no columns, a row of the wrong length or with
            unknown keys, or two rows with the same key.

    Example:
        >>> page = render_html(title="run", metrics=[("acc", "accuracy", 0.5)])
        >>> '<td data-key="acc">0.5000</td>' in page
        True
        >>> page = render_html(title="run", metrics={"classification": [("acc", "accuracy", 0.5)],
        ...                                          "embedding": [("r1", "recall@1", 0.25)]})
        >>> '<tr class="group"><th colspan="2">embedding</th></tr>' in page
        True
        >>> page = render_html(title="compare", tables=[(
        ...     "Objectives", [("objective", "objective"), ("acc", "test accuracy")],
        ...     [{"objective": "softmax", "acc": 0.91}, ("center", 0.95)])])
        >>> '<td data-key="center/acc">0.9500</td>' in page
        True
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    if command:
        parts += ["<h2>Command</h2>", f'<pre class="command">{html.escape(command)}</pre>']
    metrics, config, images = _groups(metrics), _groups(config), list(images)
    if metrics:
        parts += ["<h2>Metrics</h2>", _table(metrics, "metrics", "data-key", format_value)]
    for heading, columns, rows in tables:
        parts += [f"<h2>{html.escape(str(heading))}</h2>", _wide_table(heading, columns, rows)]
    if images:
        parts += ["<h2>Figures</h2>", '<div class="figures">']
        parts += [_image(png, caption) for caption, png in images]
        parts.append("</div>")
    if config:
        parts += ["<h2>Configuration</h2>", _table(config, "config", "data-option", _exact)]
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    parts += [f"<footer>Written by lossweave on {html.escape(stamp)}.</footer>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_html(path, **kwargs):
    """Write ``render_html(**kwargs)`` to ``path`` (UTF-8); returns the path."""
    path = pathlib.Path(path)
    path.write_text(render_html(**kwargs), encoding="utf-8")
    return path
