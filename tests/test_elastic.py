"""ElasticFace (Boutros et al., CVPRW 2022): lossweave.ops.elastic and the terms ElasticArcFace / ElasticCosFace.

The references are written from the paper: the margins ``m_i ~ N(m, sigma)``
(Eq. 3), the targets ``s cos(theta_yi + m_i)`` (Eq. 4) and ``s (cos theta_yi -
m_i)`` (Eq. 5) in a softmax cross-entropy; the "+" assignment as the paper
states it and as the authors' released code does it (``utils/losses.py`` of
github.com/fdbtrs/ElasticFace: ``margin_sorted[argsort_desc(cos)]``). The draws
are the backend's own, so a reference reads the term's generator state before a
call and draws the same margins from a twin generator.
"""

import os

import keras
import numpy as np
import pytest

import lossweave as lw
from conftest import BACKEND, one_backend, to_numpy
from lossweave.ops import elastic

DIM, CLASSES, BATCH = 5, 6, 8
KINDS = {"arc": lw.terms.ElasticArcFace, "cos": lw.terms.ElasticCosFace}
MEAN = {"arc": 0.5, "cos": 0.35}


# ------------------------------------------------------------ NumPy references
def _unit(v):
    v = np.asarray(v, dtype="float64")
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def np_plus(margins, cos, order):
    """ElasticFace+ over the rows given: sort the margins ascending and the rows by descending cosine."""
    margins, cos = np.asarray(margins, "float64"), np.asarray(cos, "float64")
    ascending = np.sort(margins)
    by_cos = np.argsort(-cos, kind="stable")
    out = np.empty_like(margins)
    if order == "paper":
        out[by_cos] = ascending            # the k-th closest row gets the k-th smallest margin
    else:
        out = ascending[by_cos]            # the released code: margin_sorted[idicate_cosie]
    return out


def np_elastic_logits(kind, x, w, y, margins, scale):
    """Eq. 4 (arc) / Eq. 5 (cos): ``s cos theta_j``, the target's entry with the sample's own margin."""
    cos = np.clip(_unit(x) @ _unit(w).T, -1.0, 1.0)
    rows = np.arange(len(y))
    theta = np.arccos(cos[rows, y])
    target = np.cos(theta + margins) if kind == "arc" else cos[rows, y] - margins
    z = scale * cos
    z[rows, y] = scale * target
    return z


def np_cross_entropy(z, y, weights=None):
    top = z.max(axis=1, keepdims=True)
    per = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0] - z[np.arange(len(y)), y]
    weights = np.ones(len(y)) if weights is None else np.asarray(weights, "float64")
    return float(np.sum(per * weights) / len(y))


# --------------------------------------------------------------------- helpers
def _data(seed=0, n=BATCH):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype("float32")
    y = rng.integers(0, CLASSES, n).astype("int32")
    return x, y


def _term(kind, **kwargs):
    term = KINDS[kind](CLASSES, **{"scale": 16.0, "seed": 3, **kwargs})
    term.build((None, DIM))
    w = np.random.default_rng(1).normal(size=(CLASSES, DIM)).astype("float32")
    term.class_weights.assign(w)
    return term, w


def _next_margins(term, n):
    """The margins the term's next training call draws (a twin generator at the term's state)."""
    twin = keras.random.SeedGenerator(0)
    twin.state.assign(term.seed_generator.state)
    return to_numpy(elastic.normal_margins(n, term.mean_margin, term.sigma, twin)).astype("float64")


# ----------------------------------------------------------------- the formula
@pytest.mark.parametrize("plus", [False, "authors", "paper"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_logits_and_loss_match_the_paper_given_the_drawn_margins(kind, plus):
    extra = {"plus": True, "plus_order": plus} if plus else {}
    term, w = _term(kind, sigma=0.1, **extra)
    x, y = _data()
    cos_y = (_unit(x) @ _unit(w).T)[np.arange(BATCH), y]
    for step in range(2):                                  # the second call draws new margins
        margins = _next_margins(term, BATCH)
        if plus:
            margins = np_plus(margins, cos_y, plus)
        expected = np_elastic_logits(kind, x, w, y, margins, 16.0)
        twin_state = to_numpy(term.seed_generator.state)
        logits = to_numpy(term.margin_logits(x, y, training=True))
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=2e-5, err_msg=f"step {step}")
        term.seed_generator.state.assign(twin_state)       # the loss of the same draw
        loss = float(to_numpy(term(x, y, training=True)))
        np.testing.assert_allclose(loss, np_cross_entropy(expected, y), rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_evaluation_uses_the_mean_margin_and_draws_nothing(kind):
    term, w = _term(kind)
    x, y = _data(2)
    state = to_numpy(term.seed_generator.state)
    expected = np_elastic_logits(kind, x, w, y, np.full(BATCH, MEAN[kind]), 16.0)
    np.testing.assert_allclose(to_numpy(term.margin_logits(x, y)), expected, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(float(to_numpy(term(x, y, training=False))), np_cross_entropy(expected, y), rtol=1e-5)
    np.testing.assert_array_equal(to_numpy(term.seed_generator.state), state)


def test_sigma_zero_is_cosface_and_sampling_comes_from_the_base():
    """sigma = 0 gives CosFace exactly, Partial FC sampling included (same seed: the same classes)."""
    x, y = _data(3, n=2)                                   # 2 samples, budget 3 of 6 classes: 3 slots
    elastic_cos = lw.terms.ElasticCosFace(CLASSES, scale=16.0, sigma=0.0, sample_rate=0.5, seed=4)
    cosface = lw.terms.CosFace(CLASSES, scale=16.0, sample_rate=0.5, seed=4)
    for term in (elastic_cos, cosface):
        term.build((None, DIM))
        term.class_weights.assign(np.random.default_rng(1).normal(size=(CLASSES, DIM)).astype("float32"))
    assert elastic_cos.samples(True) and not lw.terms.ElasticCosFace(CLASSES).samples(True)
    np.testing.assert_allclose(float(elastic_cos(x, y, training=True)), float(cosface(x, y, training=True)),
                               rtol=1e-6)
    assert elastic_cos.margin_logits(x, y, training=True).shape[1] == 3  # the sampled classes only


# ----------------------------------------------------------- the distribution
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_margins_are_normal_with_the_papers_mean_and_sigma(kind):
    term, _ = _term(kind)
    n = 20000
    draws = to_numpy(term.margins(np.zeros(n, "float32"), training=True)).astype("float64")
    assert term.sigma == 0.05
    assert abs(draws.mean() - MEAN[kind]) < 4 * 0.05 / np.sqrt(n)
    assert abs(draws.std() / 0.05 - 1.0) < 0.03
    within = np.mean(np.abs(draws - MEAN[kind]) < 0.05)  # one sigma: 68.3 %
    assert abs(within - 0.683) < 0.015
    again = to_numpy(term.margins(np.zeros(n, "float32"), training=True))
    assert not np.allclose(again, draws)                  # a new draw at every step


# ----------------------------------------------------------------- the + rule
@one_backend
def test_plus_orders_on_a_hand_case():
    m = np.array([0.4, 0.1, 0.3, 0.2], "float32")
    cos = np.array([0.2, 0.9, -0.1, 0.5], "float32")     # descending argsort: 1, 3, 0, 2
    paper = to_numpy(elastic.plus_margins(m, cos, "paper"))
    authors = to_numpy(elastic.plus_margins(m, cos, "authors"))
    np.testing.assert_allclose(paper, [0.3, 0.1, 0.4, 0.2])       # farther from the center: larger margin
    np.testing.assert_allclose(authors, [0.2, 0.4, 0.1, 0.3])     # sorted[[1, 3, 0, 2]]
    np.testing.assert_allclose(paper, np_plus(m, cos, "paper"))
    np.testing.assert_allclose(authors, np_plus(m, cos, "authors"))


@pytest.mark.parametrize("order", elastic.PLUS_ORDERS)
def test_plus_ranks_only_the_rows_that_count(order):
    rng = np.random.default_rng(5)
    m, cos = rng.normal(0.5, 0.05, 9).astype("float32"), rng.uniform(-1, 1, 9).astype("float32")
    ranked = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0], bool)
    out = to_numpy(elastic.plus_margins(m, cos, order, ranked))
    np.testing.assert_array_equal(out[~ranked], m[~ranked])                 # the others keep their draw
    np.testing.assert_allclose(out[ranked], np_plus(m[ranked], cos[ranked], order), rtol=1e-6)
    if order == "paper":
        rank_cos, rank_m = cos[ranked], out[ranked]
        assert np.all(np.diff(rank_m[np.argsort(-rank_cos)]) >= 0)          # monotone in the distance


def test_plus_term_leaves_rows_of_weight_zero_out_of_the_ranking():
    """A row of weight 0 (here: a missing label) changes no other row's margin or the loss."""
    term, w = _term("arc", sigma=0.1, plus=True, plus_order="paper", missing=-1)
    x, y = _data(6)
    y_missing = y.copy()
    y_missing[2] = -1
    margins = _next_margins(term, BATCH)
    state = to_numpy(term.seed_generator.state)
    keep = np.arange(BATCH) != 2
    cos_y = (_unit(x) @ _unit(w).T)[np.arange(BATCH), y]
    assigned = margins.copy()
    assigned[keep] = np_plus(margins[keep], cos_y[keep], "paper")
    expected = np_elastic_logits("arc", x[keep], w, y[keep], assigned[keep], 16.0)
    # Keras's sum_over_batch_size over the labelled rows (the base rescales their weights).
    loss = float(to_numpy(term(x, y_missing, training=True)))
    np.testing.assert_allclose(loss, np_cross_entropy(expected, y[keep]), rtol=1e-5)
    x_moved = x.copy()
    x_moved[2] = -x[2]                                     # the missing row's cosine: not in the ranking
    term.seed_generator.state.assign(state)
    np.testing.assert_allclose(float(to_numpy(term(x_moved, y_missing, training=True))), loss, rtol=1e-6)


# ------------------------------------------------- determinism and save / load
def test_same_seed_same_draws_other_seed_other_draws():
    x, y = _data(7)
    one, two, other = (_term("cos", seed=s)[0] for s in (11, 11, 12))
    for _ in range(2):
        a, b, c = (float(t(x, y, training=True)) for t in (one, two, other))
        assert a == b and a != c


def _model():
    inputs = keras.Input((DIM,))
    return keras.Model(inputs, {"embedding": keras.layers.Dense(4, name="embedding")(inputs)})


def test_a_reloaded_term_continues_the_sequence(tmp_path):
    x, y = _data(8, n=16)
    term = lw.terms.ElasticArcFace(CLASSES, scale=16.0, sigma=0.1, plus=True, seed=2)
    objective = lw.Objective(_model(), {"elastic": term})
    objective.build((None, DIM))
    embedding = to_numpy(objective.model(x)["embedding"])
    start = to_numpy(term.seed_generator.state)
    for _ in range(2):                                     # two training calls move the generator
        term(embedding, y, training=True)
    state = to_numpy(term.seed_generator.state)
    assert not np.array_equal(state, start)
    path = os.path.join(tmp_path, "elastic.keras")
    objective.save(path)
    loaded = keras.saving.load_model(path).terms["elastic"]
    assert type(loaded) is type(term) and loaded.get_config() == term.get_config()
    np.testing.assert_array_equal(to_numpy(loaded.seed_generator.state), state)
    for _ in range(2):                                     # the next draws are the same
        a = float(to_numpy(term(embedding, y, training=True)))
        b = float(loaded(embedding, y, training=True))
        np.testing.assert_allclose(a, b, rtol=1e-6)
    fresh = lw.terms.ElasticArcFace(CLASSES, scale=16.0, sigma=0.1, plus=True, seed=2)
    fresh.build((None, 4))
    fresh.class_weights.assign(term.class_weights)
    assert float(fresh(embedding, y, training=True)) != a  # a fresh term starts the sequence again


# ----------------------------------------------------------- mixed precision
def test_mixed_precision_computes_in_float32():
    x, y = _data(9)
    reference, _ = _term("arc", sigma=0.05)
    state = to_numpy(reference.seed_generator.state)
    expected = float(reference(x.astype("float16").astype("float32"), y, training=True))
    term, _ = _term("arc", sigma=0.05, dtype="mixed_float16")
    term.seed_generator.state.assign(state)
    loss = term(keras.ops.cast(x, "float16"), y, training=True)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32" and term.class_weights.dtype == "float32"
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


# ------------------------------------------------------------------ arguments
@one_backend
def test_arguments_are_checked_and_sigma_defaults_follow_the_authors():
    assert (lw.terms.ElasticArcFace(3).sigma, lw.terms.ElasticArcFace(3, plus=True).sigma) == (0.05, 0.0175)
    assert (lw.terms.ElasticCosFace(3).sigma, lw.terms.ElasticCosFace(3, plus=True).sigma) == (0.05, 0.02)
    assert lw.terms.ElasticCosFace(3, sigma=0.0).sigma == 0.0
    with pytest.raises(ValueError, match="sigma"):
        lw.terms.ElasticArcFace(3, sigma=-0.1)
    with pytest.raises(ValueError, match=r"`plus_order` must be one of \('authors', 'paper'\); received 'rank'"):
        lw.terms.ElasticCosFace(3, plus=True, plus_order="rank")
    with pytest.raises(ValueError, match="plus"):
        lw.terms.ElasticCosFace(3, plus=1)
    with pytest.raises(ValueError, match="angular_margin"):
        lw.terms.ElasticArcFace(3, angular_margin=4.0)
