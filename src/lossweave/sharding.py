"""Class tables sharded by class over a device mesh, with ``keras.distribution`` (JAX).

The big tables of an objective (the class weights of the margin terms, the
centers of ``CenterLoss``, the proxies of the proxy losses) are ordinary Keras
variables, so ``keras.distribution.ModelParallel`` places them: a
``LayoutMap`` entry ``path -> ("model", None)`` splits a table's rows (its
classes) over the ``"model"`` axis of a ``DeviceMesh``, and XLA partitions
the step (logits as a sharded matmul, the center update as a row scatter on
each shard). lossweave writes no sharding of its own: this module only names
the tables.

A ``LayoutMap`` is read when a variable is created, so the entries must be in
it before the Objective is built. They are found from the terms alone (each
term's ``class_tables()``, answered by the class-table base, and the name the
Objective gives it), before anything is built:

- ``table_layouts(terms)``: ``{variable-path pattern: (model_axis, None)}``;
- ``fill_layout_map(layout_map, terms)``: the same entries written into a
  ``keras.distribution.LayoutMap``, checked against its mesh (the axis exists,
  it divides the number of rows).

See docs/scale.md for the mesh of one host and of several hosts.
"""

import re

import keras

from lossweave.terms.base import Term


def _named_terms(terms):
    """``[(name, term)]`` from an Objective, a dict of name -> term, a list of terms or one term."""
    if hasattr(terms, "terms") and isinstance(terms.terms, dict):  # an Objective
        return list(terms.terms.items())
    if isinstance(terms, Term):
        return [(terms.name, terms)]
    if isinstance(terms, dict):
        # The Objective names an unbuilt term after its key: its variables' paths will say so.
        return [(term.name if term.built else name, term) for name, term in terms.items()]
    if isinstance(terms, (list, tuple)) and all(isinstance(t, Term) for t in terms):
        return [(term.name, term) for term in terms]
    raise TypeError(
        "lossweave.sharding: expected an Objective, a dict of name -> term, a list of terms or one "
        f"term; received {type(terms).__name__}."
    )


def _tables(terms):
    """``[(path pattern, rows, description)]`` of every class table of ``terms``."""
    tables = []
    for name, term in _named_terms(terms):
        # A term says which of its variables are class tables (the class-table base answers).
        class_tables = getattr(term, "class_tables", None)
        for attribute, rows in class_tables() if class_tables else ():
            variable = getattr(term, attribute, None) if term.built else None
            if variable is not None:  # built: its exact path
                pattern = re.escape(variable.path)
            else:  # "objective/arcface/class_weights", or "arcface/class_weights" outside an Objective
                pattern = f"(?:.*/)?{re.escape(name)}/{attribute}"
            tables.append((pattern, rows, f"{type(term).__name__} '{name}' ({attribute})"))
    return tables


def _check_axis(model_axis):
    if not isinstance(model_axis, str) or not model_axis:
        raise ValueError(
            f"lossweave.sharding: model_axis must be the name of one mesh axis (a str, e.g. 'model'); "
            f"received {model_axis!r}."
        )


def _check_created_under_distribution(terms):
    """An unbuilt term that owns variables already (a sampling seed) must be created under the distribution.

    Keras places a variable when it is created: one made before
    ``set_distribution`` stays on one device, and the compiled step then fails
    with "incompatible devices".
    """
    if keras.distribution.distribution() is not None:
        return
    early = [name for name, term in _named_terms(terms) if not term.built and term.variables]
    if early:
        raise ValueError(
            f"lossweave.sharding.fill_layout_map: the terms {early} created variables "
            f"({[v.path for name, t in _named_terms(terms) if name in early for v in t.variables]}) before any "
            "keras.distribution was set, so they stay on one device. Set the distribution first "
            "(keras.distribution.set_distribution(ModelParallel(layout_map=layout_map, ...)) with this "
            "layout map, filled afterwards), then create the terms, fill the map and build the objective."
        )


def table_layouts(terms, model_axis="model"):
    """Layout entries that shard every class table of ``terms`` by class over ``model_axis``.

    Args:
        terms: an ``Objective``, the dict of name -> term given to it, a list
            of terms, or one term. Unbuilt terms are named as the Objective
            will name them (their dict key).
        model_axis: the mesh axis the table rows (classes) are split over.

    Returns:
        ``{pattern: (model_axis, None)}``: each pattern matches (``re.fullmatch``,
        as ``keras.distribution.LayoutMap`` does) the path of one table, e.g.
        ``"(?:.*/)?arcface/class_weights"``. Terms without a class table add
        nothing. The optimizer's slots of a table take the table's layout.

    Example:
        >>> import lossweave as lw
        >>> terms = {"arcface": lw.terms.ArcFace(1000), "center": lw.terms.CenterLoss(1000)}
        >>> for pattern, axes in lw.sharding.table_layouts(terms).items():
        ...     print(pattern, axes)
        (?:.*/)?arcface/class_weights ('model', None)
        (?:.*/)?center/centers ('model', None)
    """
    _check_axis(model_axis)
    return {pattern: (model_axis, None) for pattern, _, _ in _tables(terms)}


def fill_layout_map(layout_map, terms, model_axis="model"):
    """Write ``table_layouts(terms, model_axis)`` into a ``keras.distribution.LayoutMap``.

    Call it before the Objective is built (variables read the map when they
    are created), with the distribution already set if a term owns variables
    from its constructor (the seed of ``sample_rate < 1``): a
    ``ModelParallel`` reads its map at variable creation, so it can be given
    the map first and the entries after. Checks that ``model_axis`` is an
    axis of the map's mesh and that its size divides the rows of every table
    (JAX shards evenly only).

    Args:
        layout_map: a ``keras.distribution.LayoutMap`` (it may hold entries for
            the model's own variables already).
        terms: see :func:`table_layouts`.
        model_axis: the mesh axis the classes are split over.

    Returns:
        ``layout_map``, for ``keras.distribution.ModelParallel(layout_map=...)``.

    Raises:
        ValueError: an unknown axis, a number of rows the axis does not divide,
            a pattern already in the map, or unbuilt terms that own variables
            while no distribution is set.

    Example:
        >>> import keras, lossweave as lw
        >>> mesh = keras.distribution.DeviceMesh((1, 1), ["data", "model"], ["cpu:0"])
        >>> terms = {"arcface": lw.terms.ArcFace(1000), "center": lw.terms.CenterLoss(1000)}
        >>> layout_map = lw.sharding.fill_layout_map(keras.distribution.LayoutMap(mesh), terms)
        >>> layout_map["objective/arcface/class_weights"].axes
        ('model', None)
    """
    if not isinstance(layout_map, keras.distribution.LayoutMap):
        raise TypeError(
            f"lossweave.sharding.fill_layout_map: expected a keras.distribution.LayoutMap; received "
            f"{type(layout_map).__name__}. Create one with keras.distribution.LayoutMap(device_mesh)."
        )
    _check_axis(model_axis)
    mesh = layout_map.device_mesh
    if model_axis not in mesh.axis_names:
        raise ValueError(
            f"lossweave.sharding.fill_layout_map: the mesh has axes {list(mesh.axis_names)}; received "
            f"model_axis={model_axis!r}. Pass the name of the axis to split the classes over."
        )
    shards = mesh.shape[list(mesh.axis_names).index(model_axis)]
    _check_created_under_distribution(terms)
    for pattern, rows, what in _tables(terms):
        if rows % shards:
            raise ValueError(
                f"lossweave.sharding.fill_layout_map: {what} has {rows} rows, which the {shards} devices "
                f"of mesh axis {model_axis!r} do not divide; expected a multiple of {shards}. Use a "
                f"num_classes that is (pad it with unused classes) or a smaller model axis."
            )
        if pattern in list(layout_map):
            raise ValueError(
                f"lossweave.sharding.fill_layout_map: the layout map has an entry {pattern!r} already "
                f"(for {what}); fill it once per objective."
            )
        layout_map[pattern] = (model_axis, None)
    return layout_map


__all__ = ["fill_layout_map", "table_layouts"]
