"""Config files: the TOML ``--config`` reads and the ``config.toml`` a run writes.

Keys are option names (``embedding-dim = 2`` or ``embedding_dim = 2``); the
command line wins over the file, the file over the defaults
(:func:`resolve_config`). :func:`config_toml` writes a resolved
configuration back, reusable with ``--config``.
"""

import datetime
import json
import pathlib

import numpy as np

from lossweave.cli import UsageError, closest, registry
from lossweave.cli.options import OPTIONS, TrainConfig


def read_config_file(path, options=OPTIONS):
    """``{option name: value}`` from a TOML file, keys checked (values are not converted yet).

    A ``[run]`` table (what ``train`` writes into ``config.toml``) is ignored.
    """
    import tomllib

    file = pathlib.Path(path)
    try:
        with file.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"--config: no such file: {str(path)!r}.") from None
    except IsADirectoryError:
        raise UsageError(f"--config: {str(path)!r} is a folder; expected a TOML file.") from None
    except OSError as error:
        raise UsageError(f"--config: cannot read {str(path)!r}: {error.strerror or error}.") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"--config {path}: invalid TOML: {error}.") from None
    raw.pop("run", None)
    known = [option.name for option in options]
    values = {}
    for key, value in raw.items():
        name = key.replace("_", "-")
        if name not in known:
            close = closest(name, known)
            hint = f" Did you mean {close!r}?" if close else ""
            raise UsageError(
                f"--config {path}: unknown key {key!r}; the keys are: "
                f"{', '.join(known)}.{hint}"
            )
        if name in values:
            raise UsageError(f"--config {path}: key {key!r} is given twice (with '-' and '_').")
        values[name] = value
    return values


def resolve_config(cli_values, config_path=None):
    """Merge defaults < config file < command line and check every value.

    Args:
        cli_values: ``{option name: value}`` given on the command line.
        config_path: optional TOML file.

    Returns:
        ``(TrainConfig, sources)`` where ``sources`` maps each option given
        explicitly to where: ``"command line"`` or the config file's path
        (an option left at its default is not in it).
    """
    resolved, sources = resolve_values(cli_values, config_path, OPTIONS)
    return TrainConfig(**resolved), sources


def resolve_values(cli_values, config_path, options):
    """``({dest: checked value}, {name: source})`` of ``options`` (see ``resolve_config``)."""
    file_values = read_config_file(config_path, options) if config_path is not None else {}
    resolved, sources = {}, {}
    for option in options:
        if option.name in cli_values:
            value, source, where = cli_values[option.name], "command line", f"--{option.name}"
        elif option.name in file_values:
            value, source, where = file_values[option.name], str(config_path), f"{config_path}: {option.name}"
        else:
            resolved[option.dest] = option.default
            continue
        try:
            resolved[option.dest] = option.convert(value)
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        sources[option.name] = source
    if resolved.get("out", "") is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        resolved["out"] = str(pathlib.Path("runs") / stamp)
    return resolved, sources


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if np.isnan(value):
            return "nan"
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_table(values):
    return [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]


def config_toml(config, run_info=None, names=None):
    """The resolved configuration as TOML (reusable with ``--config``), plus a ``[run]`` table.

    Only the options in ``names`` are written, by default those the run uses
    (``registry.applicable_options``): read back, the file gives the same run
    and no option that it would refuse.
    """
    names = registry.applicable_options(config) if names is None else set(names)
    lines = [
        "# Resolved configuration of a lossweave run; reuse it with",
        "#   lossweave train --config config.toml --out NEW_DIR",
        *_toml_table({name: value for name, value in config.to_dict().items() if name in names}),
    ]
    if run_info:
        lines += ["", "# How the run was made (ignored when read back with --config).", "[run]"]
        lines += _toml_table(run_info)
    return "\n".join(lines) + "\n"
