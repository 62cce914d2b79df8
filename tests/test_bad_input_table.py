"""Bad input, one table over every term and weighting strategy (issue 6, part 4).

Terms and strategies come from ``test_contract`` (TERMS, WEIGHTINGS): a new one
joins this table by being listed there. Each case runs through
``Objective.fit`` (one step of 8 rows) as a user would hit it, and each either

- raises a clear error, asserted by type and by the substrings that say what
  was received and what was expected:
  ``lw.InvalidInputError`` after the step for bad *values* (labels out of
  range, negative, non-integer, NaN; NaN/Inf features), a ``ValueError`` when
  the step is traced for bad *shapes and names* (wrong label rank, one-hot of
  the wrong width, an empty batch, a target or output name that does not
  exist), and a ``ValueError``/``TypeError`` for a config that does not
  deserialize; or
- is handled as documented: a batch of one row (every term) and a batch whose
  labels are all one class (every term and strategy) train to finite state; a
  term with ``num_classes=1`` trains.

After every failing case a sha256 checksum of all state (the Objective's
weights: model, centers, class weights, learned loss weights, step counters,
weighting history; the optimizer's variables; seed generators) equals the one
taken before: a bad batch changes nothing. Objectives are built once per
(term, strategy), trained one clean step (so that momentum is non-zero and an
optimizer step on zero gradients would still move weights), and reused across
cases: the checksum is what makes the reuse safe.

Pair losses (contrastive, triplet, ..., the similarity losses) label samples
with class ids, non-negative integers with no class count
(``check_pair_rows``): the out-of-range case does not apply to them, their
messages say "Expected non-negative integer labels", a 2-D label of width > 1
is a multi-hot row they accept (``tests/test_multilabel.py``), and their
single-class case checks a negative label.

``keras_loss`` (``lw.terms.Loss`` around Keras's own
``SparseCategoricalCrossentropy``) cannot check label values: Keras clamps or
returns NaN depending on the backend. Its value cases are skipped, as the
docstring of ``lw.terms.Loss`` says; its shape and name cases still run.
"""

import hashlib

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, to_numpy
from test_contract import CLASSES, DIM, TERMS, WEIGHTINGS

FEATURES, BATCH = 6, 8
UNCHECKED_TERMS = {"keras_loss": "lw.terms.Loss wraps a Keras loss that does not check label values"}

# Every term under the plain sum, and every strategy over the paper's center loss
# (its learned weights / loss history / seed are then in the checksum).
PAIRS = [(name, "sum") for name in sorted(TERMS)] + [
    ("center_paper", weighting) for weighting in sorted(WEIGHTINGS) if weighting != "sum"
]
PAIR_IDS = [f"{t}-{w}" for t, w in PAIRS]
# Shapes, names and empty batches are checked before any strategy runs: every term, plain sum.
TERM_PAIRS = [(name, "sum") for name in sorted(TERMS)]

RECEIVED = r"received labels in \[{low}, {high}\]"
EXPECTED = rf"Expected integer class indices in \[0, {CLASSES}\)"
PAIR_EXPECTED = r"Expected non-negative integer labels"
# Terms whose class count is not in their config: the width of the logits they read.
CLASS_INDEX_TERMS = {"softmax", "keras_loss"}


def _takes_class_ids(term):
    """A pair loss: labels are class ids >= 0, with no class count (checked by ``check_pair_rows``)."""
    return term not in CLASS_INDEX_TERMS and "num_classes" not in TERMS[term]().get_config()


def _number(v):
    return rf"{v}(\.0)?" if float(v).is_integer() else str(v)


# case -> (spoil(x, y) -> (x, y), message regexes the InvalidInputError must match)
VALUE_CASES = {
    "out_of_range": (lambda x, y: (x, _put(y, 2, CLASSES)), [r"1 row\(s\) with an invalid label", EXPECTED,
                                                           RECEIVED.format(low=_number(0), high=_number(CLASSES))]),
    "negative": (lambda x, y: (x, _put(y, 2, -1)), [r"1 row\(s\) with an invalid label", EXPECTED,
                                                  RECEIVED.format(low=_number(-1), high=_number(CLASSES - 1))]),
    "float": (lambda x, y: (x, _put(y, 2, 1.5)), [r"1 row\(s\) with an invalid label \(first: 1\.5\)", EXPECTED]),
    "nan_label": (lambda x, y: (x, _put(y, 2, np.nan)), [r"1 row\(s\) with an invalid label", EXPECTED,
                                                       r"received labels in \[nan"]),
    "nan_feature": (lambda x, y: (_put(x, (2, 0), np.nan), y), [r"1 row\(s\) with NaN/Inf features", "finite features"]),
    "inf_feature": (lambda x, y: (_put(x, (2, 1), np.inf), y), [r"1 row\(s\) with NaN/Inf features", "finite features"]),
}


def _put(array, index, value):
    array = array.copy()
    array[index] = value
    return array


def _model(classes=CLASSES, score=False):
    inputs = keras.Input((FEATURES,))
    emb = keras.layers.Dense(DIM)(inputs)
    outputs = {"embedding": emb, "logits": keras.layers.Dense(classes)(emb)}
    if score:  # a regression head on the same trunk (shared variables for the gradient level)
        outputs["score"] = keras.layers.Dense(1)(emb)
    return keras.Model(inputs, outputs)


def _data(n=BATCH, classes=CLASSES, seed=3):
    rng = np.random.default_rng(seed)
    # Every class present, float labels (as most pipelines deliver them).
    y = (np.arange(n) % classes).astype("float32")
    return rng.normal(size=(n, FEATURES)).astype("float32"), y


def _fit(objective, x, y, **kwargs):
    kwargs = {"batch_size": BATCH, "epochs": 1, "verbose": 0, "shuffle": False, **kwargs}
    return objective.fit(x, y, **kwargs)


def _state(objective):
    """Every variable whose value a step could change, with its path."""
    variables = list(objective.weights) + list(objective.optimizer.variables)
    seen = {id(v) for v in variables}
    for layer in [objective, *objective._flatten_layers()]:  # seed generators (RLW) are not weights
        for generator in getattr(layer, "_seed_generators", []):
            if id(generator.state) not in seen:
                seen.add(id(generator.state))
                variables.append(generator.state)
    return variables


def _checksum(objective):
    digest = hashlib.sha256()
    for variable in _state(objective):
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(to_numpy(variable)).tobytes())
    return digest.hexdigest()


def _changed(objective, before):
    """Paths of the variables that differ from the snapshot ``before`` (for failure messages)."""
    return [v.path for v, b in zip(_state(objective), before) if not np.array_equal(to_numpy(v), b, equal_nan=True)]


def _snapshot(objective):
    return [to_numpy(v).copy() for v in _state(objective)]


_CACHE = {}


def _objective(term, weighting):
    """One trained objective per (term, strategy), shared by the cases (a bad step changes nothing)."""
    key = (term, weighting)
    if key not in _CACHE:
        objective = lw.Objective(_model(), {"term": TERMS[term]()}, weighting=WEIGHTINGS[weighting]())
        objective.compile(optimizer="adam")
        x, y = _data()
        _fit(objective, x, {"label": y})  # one clean step: optimizer slots exist and are non-zero
        _CACHE[key] = objective
    return _CACHE[key]


def _assert_unchanged(objective, before, snapshot):
    assert _checksum(objective) == before, f"state changed by a failed step: {_changed(objective, snapshot)}"


# ------------------------------------------------------------------ bad values
@pytest.mark.parametrize("case", sorted(VALUE_CASES))
@pytest.mark.parametrize("term, weighting", PAIRS, ids=PAIR_IDS)
def test_bad_values_raise_after_the_step_and_change_nothing(term, weighting, case):
    if term in UNCHECKED_TERMS:
        pytest.skip(UNCHECKED_TERMS[term])
    spoil, messages = VALUE_CASES[case]
    if _takes_class_ids(term):
        if case == "out_of_range":
            pytest.skip("class ids of a pair loss have no upper bound")
        messages = [PAIR_EXPECTED if m == EXPECTED else m for m in messages]
    objective = _objective(term, weighting)
    x, y = spoil(*_data(seed=5))
    before, snapshot = _checksum(objective), _snapshot(objective)
    with pytest.raises(lw.InvalidInputError) as info:
        _fit(objective, x, {"label": y})
    for message in messages:
        assert __import__("re").search(message, str(info.value)), (message, str(info.value))
    assert "'term'" in str(info.value)  # names the term
    _assert_unchanged(objective, before, snapshot)
    # The failure does not stick: a clean batch right after trains (train_on_batch resets no metric).
    x, y = _data(seed=5)
    objective.train_on_batch(x, {"label": y})
    assert _checksum(objective) != before


# ------------------------------------------------------------- a NaN loss
# One term of each kind (class table, margin, proxy, similarity, pairs, memory, Keras loss)
# beside a regression term, under the plain sum, and the paper's center loss under strategies
# of both levels: the regression target holds a NaN, which no input check sees (Loss passes it
# to Keras's MSE); the Objective's loss check fails the step and nothing moves, the other
# term's row-updated tables (centers, memory) included.
NAN_TERMS = ["center_paper", "center_gradient", "softmax", "keras_loss", "arcface", "proxy_anchor",
             "multi_similarity", "triplet_semi_hard", "xbm"]
NAN_WEIGHTINGS = ["fixed", "uncertainty", "famo", "mgda", "pcgrad", "nash_mtl"]
NAN_PAIRS = [(t, "sum") for t in NAN_TERMS] + [("center_paper", w) for w in NAN_WEIGHTINGS]


@pytest.mark.parametrize("term, weighting", NAN_PAIRS, ids=[f"{t}-{w}" for t, w in NAN_PAIRS])
def test_nan_loss_fails_the_step_and_changes_nothing(term, weighting):
    weights = WEIGHTINGS[weighting]()
    objective = lw.Objective(
        _model(score=True),
        {"term": TERMS[term](), "score": lw.terms.Loss("mse", on="score", target="score")},
        weighting=weights,
    )
    objective.compile(optimizer="adam")
    x, y = _data()
    score = np.linspace(0, 1, BATCH, dtype="float32")[:, None]
    _fit(objective, x, {"label": y, "score": score})
    before, snapshot = _checksum(objective), _snapshot(objective)
    with pytest.raises(lw.InvalidInputError) as info:
        _fit(objective, x, {"label": y, "score": _put(score, (3, 0), np.nan)})
    message = str(info.value)
    assert "the loss of term 'score' has NaN or Inf entries" in message, message
    assert "'term'" not in message and "Nothing was updated" in message
    _assert_unchanged(objective, before, snapshot)
    history = _fit(objective, x, {"label": y, "score": score})  # the failure does not stick
    assert np.isfinite(history.history["loss"][0]) and _checksum(objective) != before


# ------------------------------------------------------------------ bad shapes
SHAPE_CASES = {
    "rank": (lambda y: np.stack([y, y], axis=1)[..., None], [r"rank 3", r"shape \(batch, 2, 1\)",
                                                                    r"expected sparse class indices"]),
    "one_hot_width": (lambda y: np.eye(CLASSES + 2, dtype="float32")[y.astype(int)],
                      [r"one-hot labels of width 6", rf"expected width num_classes={CLASSES}"]),
}


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
@pytest.mark.parametrize("term, weighting", TERM_PAIRS, ids=[f"{t}-sum" for t, _ in TERM_PAIRS])
def test_bad_label_shapes_raise_at_trace_time(term, weighting, case):
    objective = _objective(term, weighting)
    spoil, messages = SHAPE_CASES[case]
    if _takes_class_ids(term) and case == "one_hot_width":
        pytest.skip("a 2-D row of 0s and 1s is a pair loss's multi-hot label (tests/test_multilabel.py)")
    x, y = _data(seed=6)
    y = spoil(y)
    before, snapshot = _checksum(objective), _snapshot(objective)
    with pytest.raises(ValueError) as info:
        _fit(objective, x, {"label": y})
    if BACKEND == "tensorflow" and "unknown rank" in str(info.value):
        # TensorFlow retraced the step with relaxed label shapes: the message says so.
        messages = [r"labels of unknown rank", r"expected sparse class indices", "same shape"]
    if term not in UNCHECKED_TERMS:
        for message in messages:
            assert __import__("re").search(message, str(info.value)), (message, str(info.value))
    _assert_unchanged(objective, before, snapshot)


@pytest.mark.parametrize("term, weighting", TERM_PAIRS, ids=[f"{t}-sum" for t, _ in TERM_PAIRS])
def test_empty_batch_raises(term, weighting):
    objective = _objective(term, weighting)
    x, y = _data()
    before, snapshot = _checksum(objective), _snapshot(objective)
    # Refused when the step is traced (a ValueError), or, where TensorFlow traced the
    # step for any batch size, by the run-time check (InvalidInputError, a ValueError).
    with pytest.raises(ValueError, match=r"'term': (received an empty batch \(0 rows\); expected at least one row"
                       r"|.* in a batch of 0\. Expected)"):
        objective.train_on_batch(x[:0], {"label": y[:0]})
    _assert_unchanged(objective, before, snapshot)


# ------------------------------------------------------------------ bad names
@pytest.mark.parametrize("term, weighting", TERM_PAIRS, ids=[f"{t}-sum" for t, _ in TERM_PAIRS])
def test_missing_target_raises(term, weighting):
    objective = _objective(term, weighting)
    x, y = _data()
    before, snapshot = _checksum(objective), _snapshot(objective)
    with pytest.raises(ValueError, match=r"needs target 'label', but y has \['labels'\]"):
        _fit(objective, x, {"labels": y})
    _assert_unchanged(objective, before, snapshot)


@pytest.mark.parametrize("term", sorted(TERMS))
def test_missing_output_raises(term):
    made = TERMS[term]()
    config = made.get_config()
    # A term reading two outputs (two views) names the typo as one of them.
    config["on"] = ("embedding", "embeddings_typo") if isinstance(made.on, tuple) else "embeddings_typo"
    bad = type(made).from_config(config)
    with pytest.raises(ValueError, match=r"reads output 'embeddings_typo'.*its outputs are \['embedding', 'logits'\]"):
        lw.Objective(_model(), {"term": bad})


# ------------------------------------------------------------ handled as documented
@pytest.mark.parametrize("term, weighting", PAIRS, ids=PAIR_IDS)
def test_batch_of_one_and_one_class_train(term, weighting):
    objective = _objective(term, weighting)
    x, y = _data(seed=7)
    batches = [(x, np.full_like(y, 2.0))]
    if weighting == "sum":
        # A strategy sees one loss (and gradient) per term whatever the batch size: the batch of one
        # is the term's case, run once per term; each strategy takes the one-class batch (no new trace).
        batches.insert(0, (x[:1], y[:1]))
    for rows, labels in batches:
        before = _checksum(objective)
        history = _fit(objective, rows, {"label": labels})
        assert np.isfinite(history.history["loss"][0])
        for weight in _state(objective):
            assert np.all(np.isfinite(to_numpy(weight))), weight.path
        assert _checksum(objective) != before  # the step trained


@pytest.mark.parametrize("term", sorted(TERMS))
def test_single_class_term_trains(term):
    made = TERMS[term]()
    config = made.get_config()
    if "num_classes" in config:
        config["num_classes"] = 1
    objective = lw.Objective(_model(classes=1), {"term": type(made).from_config(config)})
    objective.compile(optimizer="adam")
    x, _ = _data()
    history = _fit(objective, x, {"label": np.zeros(BATCH, "float32")})
    assert np.isfinite(history.history["loss"][0])
    for weight in _state(objective):
        assert np.all(np.isfinite(to_numpy(weight))), weight.path
    if _takes_class_ids(term):  # no class count: a negative id is what is invalid
        with pytest.raises(lw.InvalidInputError, match=PAIR_EXPECTED):
            _fit(objective, x, {"label": -np.ones(BATCH, "float32")})
    elif term not in UNCHECKED_TERMS:  # and label 1 is now out of range
        with pytest.raises(lw.InvalidInputError, match=r"in \[0, 1\)"):
            _fit(objective, x, {"label": np.ones(BATCH, "float32")})


# ------------------------------------------------------------------ bad configs
def _config_cases(obj):
    config = obj.get_config()
    # Keras's Layer rejects an unknown keyword with an error that names it.
    cases = {"unknown_key": ({**config, "num_clases": 4}, "num_clases")}
    if "num_classes" in config:
        cases["wrong_type"] = ({**config, "num_classes": "4"}, r"`num_classes` must be an int >= 1; received '4'")
        cases["missing_arg"] = ({k: v for k, v in config.items() if k != "num_classes"}, "num_classes")
    return cases


CONFIG_CASES = ["unknown_key", "wrong_type", "missing_arg"]


@pytest.mark.parametrize("case", CONFIG_CASES)
@pytest.mark.parametrize("kind, name", [("term", n) for n in sorted(TERMS)] + [("weighting", n) for n in sorted(WEIGHTINGS)])
def test_corrupted_config_raises(kind, name, case):
    obj = (TERMS if kind == "term" else WEIGHTINGS)[name]()
    cases = _config_cases(obj)
    if case not in cases:
        pytest.skip(f"{type(obj).__name__} has no num_classes argument")
    config, message = cases[case]
    # Keras wraps what the constructor raised in a TypeError that keeps its message.
    with pytest.raises((TypeError, ValueError), match=message):
        type(obj).from_config(config)
    serialized = keras.saving.serialize_keras_object(obj)
    serialized["config"] = config
    with pytest.raises((TypeError, ValueError), match=message):
        keras.saving.deserialize_keras_object(serialized)
