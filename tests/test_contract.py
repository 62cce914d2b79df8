"""One contract for every term and weighting strategy: new ones join by being listed here.

Each must: round-trip through its config and through a saved ``.keras`` file
with a non-default value for every constructor argument (the entries of
``contract_cases.py``), every argument's attribute and every variable equal
afterwards; train inside an Objective with finite gradients (the tables below);
and accept float16/bfloat16 outputs.
"""

import inspect
import json

import keras
import numpy as np
import pytest

import contract_cases as cc
import lossweave as lw
from conftest import to_numpy

CLASSES, DIM = 4, 3

TERMS = {
    "center_paper": lambda: lw.terms.CenterLoss(num_classes=CLASSES, on="embedding"),
    "center_gradient": lambda: lw.terms.CenterLoss(num_classes=CLASSES, update="gradient", on="embedding"),
    "softmax": lambda: lw.terms.SoftmaxCrossEntropy(on="logits"),
    "keras_loss": lambda: lw.terms.Loss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), on="logits"
    ),
    "normface": lambda: lw.terms.NormFace(num_classes=CLASSES, learn_scale=True),
    "cosface": lambda: lw.terms.CosFace(num_classes=CLASSES),
    "arcface": lambda: lw.terms.ArcFace(num_classes=CLASSES),
    "combined_margin": lambda: lw.terms.CombinedMargin(num_classes=CLASSES),
    "subcenter_arcface": lambda: lw.terms.SubCenterArcFace(num_classes=CLASSES),
    "sphereface": lambda: lw.terms.SphereFace(num_classes=CLASSES),
    "large_margin_softmax": lambda: lw.terms.LargeMarginSoftmax(num_classes=CLASSES),
    "adaface": lambda: lw.terms.AdaFace(num_classes=CLASSES),
    "magface": lambda: lw.terms.MagFace(num_classes=CLASSES, lower_norm=0.5, upper_norm=5.0, check_lambda=False),
    "curricular_face": lambda: lw.terms.CurricularFace(num_classes=CLASSES),
    "adacos": lambda: lw.terms.AdaCos(num_classes=CLASSES),
    "proxy_anchor": lambda: lw.terms.ProxyAnchorLoss(num_classes=CLASSES, delta=0.2, scale=16.0),
    "proxynca_pp": lambda: lw.terms.ProxyNCALoss(num_classes=CLASSES, temperature=1 / 9, include_positive=True),
    "multi_similarity": lambda: lw.terms.MultiSimilarityLoss(alpha=3.0, beta=40.0, base=0.5, epsilon=0.2),
    "circle": lambda: lw.terms.CircleLoss(relaxation=0.4, scale=80.0),
    "supcon": lambda: lw.terms.SupConLoss(temperature=0.2),
    "ntxent": lambda: lw.terms.NTXentLoss(temperature=0.5, on="embedding"),
    # Two views read as a tuple of outputs (here one output twice: the model has no second view).
    "ntxent_views": lambda: lw.terms.TwoViewNTXentLoss(temperature=0.5, on=("embedding", "embedding")),
    "contrastive": lambda: lw.terms.ContrastiveLoss(pos_margin=0.1, neg_margin=2.0, distance="squared_euclidean"),
    "triplet_semi_hard": lambda: lw.terms.TripletLoss(margin=0.5, distance="cosine"),
    "triplet_batch_all": lambda: lw.terms.TripletLoss(margin=0.3, mining="batch-all", average="all"),
    "lifted": lambda: lw.terms.LiftedStructureLoss(margin=0.5),
    "npairs": lambda: lw.terms.NPairsLoss(l2_reg=0.01),
    "margin_loss": lambda: lw.terms.MarginLoss(nu=0.01),
    "tuplet_margin": lambda: lw.terms.TupletMarginLoss(scale=16.0),
    "xbm": lambda: lw.terms.CrossBatchMemory(lw.terms.TripletLoss(mining="batch-hard", soft=True), memory_size=24),
}
WEIGHTINGS = {
    "sum": lambda: lw.weighting.Weighting(),
    "fixed": lambda: lw.weighting.Fixed({"term": 0.5}),
    "scheduled": lambda: lw.weighting.Fixed({"term": lw.schedules.LinearWarmup(0.5, steps=2)}),
    "uncertainty": lambda: lw.weighting.Uncertainty(),
    "dwa": lambda: lw.weighting.DWA(steps_per_epoch=1),
    "rlw": lambda: lw.weighting.RLW(seed=1),
    "gls": lambda: lw.weighting.GLS(),
    "famo": lambda: lw.weighting.FAMO(),
    # Gradient-level strategies (lossweave.trainer's own step), non-default arguments.
    "mgda": lambda: lw.weighting.MGDA(normalization="loss+", iterations=20),
    "pcgrad": lambda: lw.weighting.PCGrad(seed=4),
    "cagrad": lambda: lw.weighting.CAGrad(c=0.3, rescale=1),
    "nash_mtl": lambda: lw.weighting.NashMTL(update_weights_every=2, max_norm=2.0, iterations=10),
    "gradient_mean": lambda: lw.weighting.Mean(),
    "upgrad": lambda: lw.weighting.UPGrad(preference={"term": 2.0}, norm_eps=1e-6, reg_eps=1e-3),
    "dualproj": lambda: lw.weighting.DualProj(preference={"term": 0.5}, norm_eps=0.0, reg_eps=2e-4),
    "imtlg": lambda: lw.weighting.IMTLG(),
    "aligned_mtl": lambda: lw.weighting.AlignedMTL(scale_mode="median", preference={"term": 2.0}),
    "config": lambda: lw.weighting.ConFIG(preference={"term": 0.5}, length="harmonic"),
    "gradvac": lambda: lw.weighting.GradVac(beta=0.2, grouping="layer", seed=2),
    "graddrop": lambda: lw.weighting.GradDrop(leak=0.2, seed=2),
    "moco": lambda: lw.weighting.MoCo(beta=0.4, gamma=0.2, rho=0.1, normalize=False),
    "dbmtl": lambda: lw.weighting.DBMTL(beta=0.8, beta_sigma=0.5),
    "gradnorm": lambda: lw.weighting.GradNorm(alpha=1.0, learning_rate=0.05),
}


def _model():
    inputs = keras.Input((6,))
    emb = keras.layers.Dense(DIM)(inputs)
    return keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})


def _data():
    rng = np.random.default_rng(4)
    return rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, CLASSES, 32)


# Every term under the plain sum, and every weighting over the paper's center loss.
TRAINING_CASES = [(name, "sum") for name in sorted(TERMS)] + [
    ("center_paper", weighting) for weighting in sorted(WEIGHTINGS) if weighting != "sum"
]


@pytest.mark.parametrize("name, weighting", TRAINING_CASES)
def test_trains_with_finite_state(name, weighting):
    x, y = _data()
    objective = lw.Objective(_model(), {"term": TERMS[name]()}, weighting=WEIGHTINGS[weighting]())
    objective.compile(optimizer="adam")
    objective.build((None, 6))
    before = [to_numpy(w).copy() for w in objective.model.trainable_weights]
    history = objective.fit(x, {"label": y}, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for weight in objective.weights:
        assert np.all(np.isfinite(to_numpy(weight))), weight.path
    assert any(np.any(to_numpy(a) != b) for a, b in zip(objective.model.trainable_weights, before))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(TERMS))
def test_low_precision_outputs(name, dtype):
    x, y = _data()
    term = TERMS[name]()
    outputs = _model()(x)
    read = tuple(outputs[on] for on in term.on) if isinstance(term.on, tuple) else outputs[term.on]
    value = term(keras.tree.map_structure(lambda t: keras.ops.cast(t, dtype), read), y, training=True)
    assert np.isfinite(float(to_numpy(value)))
    for weight in term.weights:  # state stays float32 (step counters, XBM's labels and positions are int32)
        integer = "iterations" in weight.path or (
            isinstance(term, lw.terms.CrossBatchMemory) and not weight.path.endswith("memory_embeddings")
        )
        assert weight.dtype == ("int32" if integer else "float32"), weight.path


# --------------------------------------------------------------- round trips
def _parameters(cls):
    """``{name: default}`` of every constructor argument of ``cls``, through ``**kwargs`` to the bases.

    A class whose ``__init__`` takes ``**kwargs`` hands them to its base, so the
    base's arguments are the class's too; of ``keras.layers.Layer`` only
    ``name`` and ``dtype`` count (the others are Keras's, none of our business),
    of ``keras.Model`` only ``name``.
    """
    found = {}
    for klass in cls.__mro__:
        if klass is keras.Model:
            found.setdefault("name", None)
            break
        if klass is keras.layers.Layer:
            found.setdefault("name", None)
            found.setdefault("dtype", None)
            break
        if "__init__" not in vars(klass):
            continue
        passes_on = False
        for p in list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                passes_on = True
            elif p.kind is not p.VAR_POSITIONAL:
                found.setdefault(p.name, p.default)
        if not passes_on:
            break
    return found


def _canon(value):
    """A plain comparable form: Keras objects by class and config, arrays as lists, NaN as a string."""
    if isinstance(value, keras.DTypePolicy):
        return ("dtype", value.name)
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_canon(v) for v in value)
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.tolist())
    if inspect.isfunction(value):
        return ("function", value.__module__, value.__qualname__)
    if hasattr(value, "get_config"):
        return (type(value).__name__, _stored(value.get_config()))
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def _stored(config):
    """A config as a .keras file stores it: JSON (tuples become lists)."""
    return json.loads(json.dumps(_canon(config)))


def _attributes(obj):
    """``{argument: canonical value of its attribute}`` of every constructor argument of ``obj``."""
    cls = type(obj)
    unused = cc.UNUSED.get(cls.__name__, {})
    return {
        name: _canon(getattr(obj, cc.attribute(cls, name)))
        for name in _parameters(cls)
        if name not in unused
    }


def test_every_public_class_has_an_entry_with_every_argument_non_default():
    problems = []
    for module in (lw, lw.terms, lw.weighting, lw.schedules, lw.metrics):
        for public in module.__all__:
            cls = getattr(module, public)
            if not inspect.isclass(cls) or public in cc.EXEMPT:
                continue
            entries = [cc.arguments(case)[1] for case, (klass, _) in cc.CASES.items() if klass is cls]
            if not entries:
                problems.append(f"{module.__name__}.{public}: no entry in contract_cases.py")
                continue
            for name, default in _parameters(cls).items():
                if name in cc.UNUSED.get(public, {}):
                    continue
                given = [kwargs[name] for kwargs in entries if name in kwargs]
                if not given:
                    problems.append(f"{public}: no entry gives `{name}`")
                elif default is not inspect.Parameter.empty and all(_canon(v) == _canon(default) for v in given):
                    problems.append(f"{public}: `{name}` only ever gets its default {default!r}")
    assert not problems, "contract_cases.py misses:\n" + "\n".join(problems)


def _default_instance(cls, kwargs):
    """``cls`` with only the arguments that have no default (DWA's ``steps_per_epoch`` too)."""
    required = {
        name for name, default in _parameters(cls).items() if default is inspect.Parameter.empty
    } | set(cc.REQUIRED.get(cls.__name__, ()))
    return cls(**{name: value for name, value in kwargs.items() if name in required}), required


def _check_same(original, restored, how):
    assert type(restored) is type(original), how
    got, expected = _attributes(restored), _attributes(original)
    for name in expected:
        assert got[name] == expected[name], f"{type(original).__name__}.{name} after {how}"


def _serialize_round_trip(obj):
    """Through Keras's serialization and JSON, as a .keras file stores a config."""
    if isinstance(obj, keras.callbacks.Callback):  # its config holds arrays: not JSON (its docstring)
        return type(obj)(**obj.get_config())
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))
    return keras.saving.deserialize_keras_object(config)


@pytest.mark.parametrize("case", sorted(cc.CASES))
def test_config_round_trip_keeps_every_argument(case):
    cls, kwargs = cc.arguments(case)
    original = cls(**kwargs)
    default, required = _default_instance(cls, cc.arguments(case)[1])  # Fresh arguments made anew
    values, defaults = _attributes(original), _attributes(default)
    for name in values:
        if name in kwargs and name not in required:  # the entry's value reached the attribute
            assert values[name] != defaults[name], f"{cls.__name__}.{name} kept its default"
    restored = _serialize_round_trip(original)
    _check_same(original, restored, "the config round trip")
    assert _stored(restored.get_config()) == _stored(original.get_config())


def _fill_variables(objects):
    """Give every variable (seed-generator states included) values no initializer gives."""
    rng = np.random.default_rng(5)
    for variable in objects.variables:
        shape, dtype = tuple(variable.shape), keras.backend.standardize_dtype(variable.dtype)
        if "float" in dtype:
            value = rng.normal(size=shape)
        else:
            value = rng.integers(1, 4, size=shape)
        variable.assign(value.astype(dtype))


def _variables(objects):
    # Loading builds a sub-layer before it joins its parent: the path keeps its layer and name only.
    return [("/".join(v.path.split("/")[-2:]), to_numpy(v)) for v in objects.variables]


def _save_and_load(objects, tmp_path):
    _fill_variables(objects)
    path = tmp_path / "contract.keras"
    objects.save(path)
    restored = keras.saving.load_model(path)
    got, expected = _variables(restored), _variables(objects)
    assert [p for p, _ in got] == [p for p, _ in expected]
    for (path, value), (_, before) in zip(got, expected):
        np.testing.assert_array_equal(value, before, err_msg=path)
    return restored


def _objective(terms, weighting=None):
    objective = lw.Objective(cc.contract_model(), terms, weighting=weighting)
    objective.build((None, 6))
    return objective


@pytest.mark.parametrize("case", sorted(cc.TERMS))
def test_term_keras_file_round_trip(case, tmp_path):
    term = cc.build(case)
    restored = _save_and_load(_objective({case: term}), tmp_path).terms[case]
    _check_same(term, restored, "the .keras round trip")


@pytest.mark.parametrize("case", sorted(cc.WEIGHTINGS))
def test_weighting_keras_file_round_trip(case, tmp_path):
    weighting = cc.build(case)
    restored = _save_and_load(_objective(cc.two_terms(), weighting), tmp_path).weighting
    _check_same(weighting, restored, "the .keras round trip")


@pytest.mark.parametrize("case", sorted(cc.SCHEDULES))
def test_schedule_keras_file_round_trip(case, tmp_path):
    schedule = cc.build(case)
    objective = _objective(cc.two_terms(), lw.weighting.Fixed({"a": schedule}))
    restored = _save_and_load(objective, tmp_path).weighting.weights_by_term["a"]
    _check_same(schedule, restored, "the .keras round trip")


@pytest.mark.parametrize("case", sorted(cc.OBJECTIVES))
def test_objective_keras_file_round_trip(case, tmp_path):
    objective = cc.build(case)
    objective.build((None, 6))
    _check_same(objective, _save_and_load(objective, tmp_path), "the .keras round trip")


def test_margin_logits_keras_file_round_trip(tmp_path):
    layer = cc.build("margin_logits")
    inputs = keras.Input((cc.DIM,))
    model = keras.Model(inputs, layer(inputs))
    restored = _save_and_load(model, tmp_path).get_layer(layer.name)
    _check_same(layer, restored, "the .keras round trip")


# ------------------------------------------------- NumPy scalars, unknown keywords
def _numpy_scalars(value, as_float=np.float32, as_int=np.int64):
    """``value`` with every int (not bool) made ``as_int`` and every float ``as_float``.

    Lists, tuples and dicts are walked (a weight per term, a list of
    boundaries, ``ks``); other objects are left as they are.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return as_int(value)
    if isinstance(value, float):
        return as_float(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_scalars(v, as_float, as_int) for v in value)
    if isinstance(value, dict):
        return {k: _numpy_scalars(v, as_float, as_int) for k, v in value.items()}
    return value


def _float32_rounded(value):
    """``value`` with every float rounded to float32 and kept a Python float (what NumPy's gives)."""
    return _numpy_scalars(value, as_float=lambda v: float(np.float32(v)), as_int=int)


def _numpy_scalars_in(value, where="config"):
    """Where ``value`` holds a NumPy scalar (``np.float32`` and ``np.int64`` are not JSON)."""
    if isinstance(value, np.generic):
        return [f"{where}: {value!r}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _numpy_scalars_in(v, f"{where}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _numpy_scalars_in(v, f"{where}[{i}]")]
    return []


def _close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("case", sorted(cc.CASES))
def test_numpy_scalar_arguments_give_the_object_python_numbers_give(case):
    """``np.int64``/``np.float32`` arguments (what ``y.max() + 1`` and an array give) are taken as numbers.

    The object equals the one built from Python numbers (floats rounded to
    float32), its attributes and its config hold Python numbers (JSON).
    """
    # Keras names the layers of Fresh arguments (a model, terms) alike in both objects.
    fresh = any(isinstance(v, cc.Fresh) for v in cc.CASES[case][1].values())
    if fresh:
        keras.backend.clear_session()
    cls, kwargs = cc.arguments(case)
    obj = cls(**{k: _numpy_scalars(v) for k, v in kwargs.items()})
    if fresh:
        keras.backend.clear_session()
    _, kwargs = cc.arguments(case)  # Fresh arguments made anew
    reference = cls(**{k: _float32_rounded(v) for k, v in kwargs.items()})
    got, expected = _attributes(obj), _attributes(reference)
    for name in expected:
        assert _close(got[name], expected[name]), f"{cls.__name__}.{name}: {got[name]!r} != {expected[name]!r}"
    held = _numpy_scalars_in({name: getattr(obj, cc.attribute(cls, name)) for name in expected}, cls.__name__)
    assert not held, "attributes keep NumPy scalars: " + ", ".join(held)
    config = obj.get_config()
    held = _numpy_scalars_in(config, f"{cls.__name__}.get_config()")
    assert not held, "the config keeps NumPy scalars: " + ", ".join(held)
    if not isinstance(obj, keras.callbacks.Callback):  # a callback's config holds arrays (its docstring)
        json.dumps(config)


LAYER_CASES = sorted(case for case, (cls, _) in cc.CASES.items() if issubclass(cls, keras.layers.Layer))


@pytest.mark.parametrize("case", LAYER_CASES)
def test_unknown_keyword_is_refused_with_the_accepted_ones(case):
    """A misspelt argument fails at construction, naming the class, the keyword and what it takes."""
    cls, kwargs = cc.arguments(case)
    with pytest.raises((TypeError, ValueError)) as info:
        cls(**kwargs, bogus_argument=1)
    message = str(info.value)
    assert cls.__name__ in message, message
    assert "bogus_argument" in message, message
    own = [name for name in _parameters(cls) if name not in ("name", "dtype")] or ["name", "dtype"]
    assert any(f"'{name}'" in message for name in own), f"none of {own} listed in: {message}"
