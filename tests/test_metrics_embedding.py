"""Embedding evaluation (lossweave.metrics.embedding) and the EmbeddingEvaluation callback.

References: brute-force NumPy loops written from the papers' definitions
(Oh Song et al. 2016 Recall@k, Musgrave et al. 2020 MAP@R), scikit-learn where it
computes the same figure, and a verification case worked out by hand (LFW protocol,
Huang et al. 2007).
"""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import lossweave as lw
from conftest import one_backend
from lossweave.metrics import (
    EmbeddingEvaluation,
    distance_ratio,
    evaluate_embeddings,
    map_at_r,
    nearest_neighbor_accuracy,
    pair_scores,
    recall_at_k,
    roc_auc,
    tar_at_far,
    verification_accuracy,
    verification_pairs,
)
from lossweave.report.features import class_distance_ratio

METRICS = ["cosine", "euclidean"]


def _random(n=60, dim=8, classes=5, seed=0, singleton=False):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    if singleton:
        labels[0] = classes  # a class of one sample
    x = rng.normal(size=(n, dim)) + 0.8 * rng.normal(size=(classes + 1, dim))[labels]
    return x, labels


def _clustered(n_per=8, classes=4, dim=6, seed=1):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per)
    centers = 10.0 * np.eye(dim)[:classes] + 1.0
    return centers[labels] + 0.01 * rng.normal(size=(labels.size, dim)), labels


# ------------------------------------------------------------ NumPy references
def _distances(x, metric):
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        return 1.0 - u @ u.T
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


def _ranked(x, i, metric):
    """Other samples ordered by distance from sample i, nearest first."""
    d = _distances(x, metric)[i]
    others = np.array([j for j in range(len(x)) if j != i])
    return others[np.argsort(d[others], kind="stable")]


def numpy_recall_at_k(x, y, k, metric):
    """Oh Song et al. 2016: a query counts if any of its k nearest has its class."""
    hits = []
    for i in range(len(x)):
        if np.sum(y == y[i]) < 2:
            continue  # lone query: skipped
        hits.append(any(y[j] == y[i] for j in _ranked(x, i, metric)[:k]))
    return float(np.mean(hits))


def numpy_map_at_r(x, y, metric):
    """Musgrave et al. 2020, Sec. 3.2: AP@R = 1/R sum_{i<=R} P(i) rel(i)."""
    aps = []
    for q in range(len(x)):
        r = int(np.sum(y == y[q])) - 1
        if r == 0:
            continue
        ranked = _ranked(x, q, metric)[:r]
        total, correct = 0.0, 0
        for i, j in enumerate(ranked, start=1):
            rel = int(y[j] == y[q])
            correct += rel
            total += (correct / i) * rel
        aps.append(total / r)
    return float(np.mean(aps))


# ----------------------------------------------------------------- retrieval
@one_backend  # NumPy metrics
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("singleton", [False, True])
def test_recall_and_map_match_brute_force_references(metric, singleton):
    x, y = _random(singleton=singleton)
    got = recall_at_k(x, y, ks=(1, 2, 4, 8), metric=metric)
    for k in (1, 2, 4, 8):
        assert got[k] == pytest.approx(numpy_recall_at_k(x, y, k, metric), abs=1e-12)
    assert map_at_r(x, y, metric=metric) == pytest.approx(numpy_map_at_r(x, y, metric), abs=1e-12)
    assert 0 < got[1] < got[8] <= 1


@one_backend  # NumPy metrics
@pytest.mark.parametrize("metric", METRICS)
def test_nearest_neighbor_accuracy_matches_sklearn_leave_one_out(metric):
    x, y = _random(n=40, seed=3)
    knn = KNeighborsClassifier(n_neighbors=1, metric=metric, algorithm="brute")
    expected = cross_val_score(knn, x, y, cv=LeaveOneOut()).mean()
    got = nearest_neighbor_accuracy(x, y, metric=metric)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == recall_at_k(x, y, ks=(1,), metric=metric)[1]


@one_backend  # NumPy metrics
def test_duplicate_of_the_query_counts_as_a_neighbour():
    # Rows 0 and 1 coincide: each is the other's nearest neighbour (self is excluded by index).
    x = np.array([[0.0, 1.0], [0.0, 1.0], [5.0, 0.0], [5.0, 0.1]])
    assert nearest_neighbor_accuracy(x, [0, 0, 1, 1], metric="euclidean") == 1.0
    assert map_at_r(x, [0, 0, 1, 1], metric="euclidean") == 1.0


@one_backend  # NumPy metrics
@pytest.mark.parametrize("metric", METRICS)
def test_perfect_clustering(metric):
    x, y = _clustered()
    figures = evaluate_embeddings(x, y, metric=metric, ks=(1, 4), num_pairs=200)
    assert figures["map@r"] == 1.0
    assert figures["recall@1"] == figures["recall@4"] == figures["nn_top1"] == 1.0
    assert figures["distance_ratio"] < 1e-2
    assert figures["verification_accuracy"] == 1.0 and figures["verification_std"] == 0.0
    assert figures["roc_auc"] == 1.0 and figures["tar@far=1e-3"] == 1.0


@one_backend  # NumPy metrics
@pytest.mark.parametrize("metric", METRICS)
def test_random_embedding_is_near_chance(metric):
    rng = np.random.default_rng(5)
    y = np.arange(200) % 4
    x = rng.normal(size=(200, 16))
    figures = evaluate_embeddings(x, y, metric=metric, ks=(1, 8), num_pairs=2000)
    assert figures["distance_ratio"] > 0.5  # class means about as close as samples to their mean
    assert 0.03 < figures["map@r"] < 0.15  # chance: about (1/4)^2: 1/4 hit R/4 times in R
    assert 0.1 < figures["nn_top1"] < 0.45
    assert 0.4 < figures["roc_auc"] < 0.6
    assert 0.35 < figures["verification_accuracy"] < 0.65


# ----------------------------------------------------------------- tightness
@one_backend  # NumPy metrics
def test_distance_ratio_euclidean_equals_report_class_distance_ratio():
    for seed in range(3):
        x, y = _random(seed=seed, singleton=bool(seed))
        assert distance_ratio(x, y, metric="euclidean") == pytest.approx(
            class_distance_ratio(x, y), rel=1e-12
        )


@one_backend  # NumPy metrics
def test_distance_ratio_cosine_by_hand():
    # Class 0 around +x, class 1 around +y, each sample at angle +-a from its axis.
    a = 0.3
    x = np.array([[np.cos(a), np.sin(a)], [np.cos(a), -np.sin(a)],
                  [np.sin(a), np.cos(a)], [-np.sin(a), np.cos(a)]])
    # Mean directions are exactly the axes; 1 - cos between them is 1.
    assert distance_ratio(x, [0, 0, 1, 1]) == pytest.approx(1 - np.cos(a), rel=1e-12)


@one_backend  # NumPy metrics
@pytest.mark.parametrize("metric", METRICS)
def test_distance_ratio_is_scale_invariant(metric):
    x, y = _random(seed=2)
    assert distance_ratio(7.3 * x, y, metric=metric) == pytest.approx(
        distance_ratio(x, y, metric=metric), rel=1e-10
    )


@one_backend  # NumPy metrics
def test_cosine_figures_are_invariant_to_row_scaling():
    x, y = _random(seed=4)
    s = np.random.default_rng(0).uniform(0.1, 10.0, size=(len(x), 1))
    assert distance_ratio(s * x, y) == pytest.approx(distance_ratio(x, y), rel=1e-10)
    assert map_at_r(s * x, y) == pytest.approx(map_at_r(x, y), abs=1e-12)
    assert recall_at_k(s * x, y) == recall_at_k(x, y)
    a, b, same = verification_pairs(y, num_pairs=100, seed=1)
    np.testing.assert_allclose(pair_scores(s[a] * x[a], s[b] * x[b]), pair_scores(x[a], x[b]), atol=1e-12)
    assert evaluate_embeddings(s * x, y, num_pairs=100) == pytest.approx(
        evaluate_embeddings(x, y, num_pairs=100), abs=1e-10
    )


# -------------------------------------------------------------- verification
# Scores of 20 pairs, genuine/impostor alternating; integers so midpoints are exact.
HAND_SCORES = np.array([95, 10, 90, 15, 85, 20, 80, 25, 75, 30,
                        70, 35, 65, 40, 45, 60, 55, 50, 58, 5], dtype=float)
HAND_SAME = np.arange(20) % 2 == 0


@one_backend  # NumPy metrics
def test_verification_accuracy_by_hand():
    # Sorted: 5F..40F, 45T, 50F, 55T, 58T, 60F, 65T..95T. On all 20 pairs the best
    # thresholds are 42.5 and 52.5 (2 errors each); the lowest wins a tie.
    # Folds 0-5 hold pairs far from that region: 42.5, both held-out pairs right.
    # Fold 6 holds (65T, 40F): on the others the lowest best is (35 + 45) / 2 = 40
    #   (errors 50F, 60F), and the held-out 40F is accepted (>= 40): 1/2.
    # Fold 7 holds (45T, 60F): the others separate perfectly at (50 + 55) / 2 = 52.5;
    #   45T is rejected and 60F accepted: 0/2.
    # Fold 8 holds (55T, 50F): 42.5 (1 error, 60F); 50F is accepted: 1/2.
    # Fold 9 holds (58T, 5F): 42.5 and 52.5 and 62.5 make 2 errors; 42.5; 2/2.
    result = verification_accuracy(HAND_SCORES, HAND_SAME, folds=10)
    np.testing.assert_array_equal(result.fold_accuracies, [1, 1, 1, 1, 1, 1, 0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(result.thresholds, [42.5] * 6 + [40.0, 52.5, 42.5, 42.5])
    assert result.accuracy == pytest.approx(0.8)
    # LFW: sigma with 9 degrees of freedom: (7 * 0.2^2 + 2 * 0.3^2 + 0.8^2) / 9 = 1.1 / 9.
    assert result.std == pytest.approx(np.sqrt(1.1 / 9))
    assert result.std_error == pytest.approx(np.sqrt(1.1 / 9) / np.sqrt(10))


@one_backend  # NumPy metrics
def test_roc_auc_and_tar_by_hand():
    # Genuine 45 beats 8 impostors, 55 and 58 beat 9, the 7 others all 10: 96 / 100.
    assert roc_auc(HAND_SCORES, HAND_SAME) == pytest.approx(0.96)
    assert roc_auc(HAND_SCORES, HAND_SAME) == roc_auc_score(HAND_SAME, HAND_SCORES)
    # FAR 0: accept >= 65, 7 of 10 genuine. FAR 0.1: accept >= 55 (60F in), 9 of 10.
    assert tar_at_far(HAND_SCORES, HAND_SAME, far=0.0) == pytest.approx(0.7)
    assert tar_at_far(HAND_SCORES, HAND_SAME, far=1e-3) == pytest.approx(0.7)
    assert tar_at_far(HAND_SCORES, HAND_SAME, far=0.1) == pytest.approx(0.9)
    assert tar_at_far(HAND_SCORES, HAND_SAME, far=0.15) == pytest.approx(0.9)  # no interpolation
    assert tar_at_far(HAND_SCORES, HAND_SAME, far=0.2) == pytest.approx(1.0)


@one_backend  # NumPy metrics
def test_verification_accuracy_is_invariant_to_monotone_maps_of_the_scores():
    rng = np.random.default_rng(0)
    same = np.arange(300) % 2 == 0
    scores = rng.normal(size=300) + same
    a = verification_accuracy(scores, same)
    b = verification_accuracy(np.exp(3 * scores), same)
    np.testing.assert_array_equal(a.fold_accuracies, b.fold_accuracies)
    assert 0.6 < a.accuracy < 0.8


@one_backend  # NumPy metrics
def test_verification_pairs_are_balanced_valid_and_seeded():
    y = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    a, b, same = verification_pairs(y, num_pairs=600, seed=3)
    assert a.shape == b.shape == same.shape == (600,)
    assert same.sum() == 300 and np.all(same[0::2]) and not np.any(same[1::2])
    np.testing.assert_array_equal(y[a] == y[b], same)
    assert np.all(a[same] != b[same])
    assert y[a[same]].tolist().count(2) == 0  # a lone sample has no genuine partner
    for fold in np.split(same, 10):
        assert fold.sum() == 30  # KFold's consecutive folds are balanced too
    a2, b2, _ = verification_pairs(y, num_pairs=600, seed=3)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    # Every member of a class is drawn as a partner (uniform over the others).
    assert set(b[same & (y[a] == 3)]) == {6, 7, 8, 9}


@one_backend  # NumPy metrics
def test_pair_scores():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[6.0, 8.0], [0.0, 2.0]])
    np.testing.assert_allclose(pair_scores(a, b), [1.0, 0.0])
    np.testing.assert_allclose(pair_scores(a, b, metric="euclidean"), [-5.0, -np.sqrt(5.0)])


# ---------------------------------------------------------- the whole report
@one_backend  # NumPy metrics
def test_evaluate_embeddings_keys_values_and_pairs():
    x, y = _random(seed=6)
    figures = evaluate_embeddings(x, y, metric="euclidean", ks=(1, 2, 4), num_pairs=400, far=1e-2)
    assert sorted(figures) == sorted(
        ["distance_ratio", "nn_top1", "recall@1", "recall@2", "recall@4", "map@r",
         "verification_accuracy", "verification_std", "roc_auc", "tar@far=1e-2"]
    )
    assert all(type(v) is float for v in figures.values())
    assert figures["recall@2"] == recall_at_k(x, y, ks=(2,), metric="euclidean")[2]
    assert figures["map@r"] == map_at_r(x, y, metric="euclidean")
    a, b, same = verification_pairs(y, num_pairs=400, seed=0)
    scores = pair_scores(x[a], x[b], metric="euclidean")
    assert figures["roc_auc"] == roc_auc(scores, same)
    assert figures["verification_accuracy"] == verification_accuracy(scores, same).accuracy
    given = evaluate_embeddings(x, y, metric="euclidean", ks=(1, 2, 4), pairs=(a, b, same), far=1e-2)
    assert given == figures
    assert sorted(evaluate_embeddings(x, y, pairs=False)) == ["distance_ratio", "map@r", "nn_top1", "recall@1"]


# ----------------------------------------------------------------- bad input
@one_backend  # NumPy metrics
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, y: map_at_r(x[:, 0], y), r"shape \(n, dim\)"),
        (lambda x, y: map_at_r(x[:, :, None], y), r"shape \(n, dim\)"),
        (lambda x, y: map_at_r(x, np.stack([y, y], 1)), r"labels of shape \(n,\)"),
        (lambda x, y: recall_at_k(x, y[:-1]), "one label per embedding row"),
        (lambda x, y: distance_ratio(x, np.zeros_like(y)), "at least 2 classes"),
        (lambda x, y: nearest_neighbor_accuracy(np.where(np.eye(len(x), x.shape[1]) > 0, np.nan, x), y), "NaN"),
        (lambda x, y: map_at_r(x, y + 0.5), "integer"),
        (lambda x, y: map_at_r(x, y, metric="manhattan"), r"`metric` must be one of \('cosine', 'euclidean'\); received 'manhattan'"),
        (lambda x, y: map_at_r(np.vstack([np.zeros((1, x.shape[1])), x[1:]]), y), "all zeros"),
        (lambda x, y: map_at_r(x[:4], [0, 1, 2, 3]), "single sample"),
        (lambda x, y: recall_at_k(x[:4], [0, 1, 2, 3]), "single sample"),
        (lambda x, y: recall_at_k(x, y, ks=(len(x),)), "only 60 samples"),
        (lambda x, y: recall_at_k(x, y, ks=(0,)), r"recall_at_k: `ks\[0\]` must be an int >= 1; received 0"),
        (lambda x, y: pair_scores(x[:3], x[:4]), "same shape"),
        (lambda x, y: verification_pairs([0, 1, 2]), "single sample"),
        (lambda x, y: verification_pairs([1, 1, 1]), "two classes"),
        (lambda x, y: evaluate_embeddings(x, y, pairs=([0], [99], [True])), r"\[0, 59\]"),
        (lambda x, y: evaluate_embeddings(x, y, pairs="all"), "pairs="),
    ],
)
def test_bad_embedding_input_is_refused(call, match):
    x, y = _random()
    with pytest.raises(ValueError, match=match):
        call(x, y)


@one_backend  # NumPy metrics
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: verification_accuracy(HAND_SCORES, HAND_SAME[:-1]), "one issame flag per score"),
        (lambda: verification_accuracy(HAND_SCORES[:, None], HAND_SAME[:, None]), "1-D"),
        (lambda: verification_accuracy(HAND_SCORES, np.ones(20, bool)), "both genuine"),
        (lambda: verification_accuracy(np.where(HAND_SAME, np.nan, HAND_SCORES), HAND_SAME), "NaN"),
        (lambda: verification_accuracy(HAND_SCORES, HAND_SAME, folds=21), "verification_accuracy: `folds` must be an int >= 2 and <= 20; received 21"),
        (lambda: verification_accuracy(HAND_SCORES, HAND_SAME * 2), "booleans"),
        (lambda: roc_auc(HAND_SCORES, np.zeros(20, bool)), "both genuine"),
        (lambda: tar_at_far(HAND_SCORES, HAND_SAME, far=2.0), "tar_at_far: `far` must be a number >= 0 and <= 1; received 2.0"),
    ],
)
def test_bad_pair_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ callback
CLASSES, FEATURES = 3, 6


def _callback_data(n=48):
    rng = np.random.default_rng(7)
    y = np.arange(n) % CLASSES
    x = (rng.normal(size=(n, FEATURES)) + 1.5 * np.eye(CLASSES, FEATURES)[y]).astype("float32")
    return x, y


def _dict_model():
    inputs = keras.Input((FEATURES,))
    emb = keras.layers.Dense(4, name="emb_layer")(keras.layers.Dense(8, activation="tanh")(inputs))
    return keras.Model(inputs, {"embedding": emb, "logits": keras.layers.Dense(CLASSES)(emb)})


def _assert_logged(history, callback, predicted, epochs, every):
    keys = [f"val_{k}" for k in evaluate_embeddings(predicted, callback._labels, ks=callback.ks, num_pairs=60)]
    assert len(keys) == 9
    for key in keys:
        assert len(history.history[key]) == epochs // every, key
    final = evaluate_embeddings(
        predicted, callback._labels, metric=callback.metric, ks=callback.ks, num_pairs=60, seed=0
    )
    for key, value in final.items():
        assert history.history[f"val_{key}"][-1] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_callback_in_fit_of_a_plain_dict_output_model():
    x, y = _callback_data()
    model = _dict_model()
    model.compile(optimizer="adam", loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    callback = EmbeddingEvaluation(x, y, every=2, ks=(1, 4), num_pairs=60, batch_size=16)
    history = model.fit(x, {"logits": y}, epochs=4, batch_size=16, verbose=0, callbacks=[callback])
    assert "val_map@r" in history.history and "val_recall@4" in history.history
    predicted = model.predict(x, batch_size=16, verbose=0)["embedding"]
    _assert_logged(history, callback, predicted, epochs=4, every=2)


def test_callback_in_fit_of_an_objective():
    x, y = _callback_data()
    objective = lw.Objective(
        _dict_model(),
        {
            "softmax": lw.terms.SoftmaxCrossEntropy(on="logits"),
            "center": lw.terms.CenterLoss(num_classes=CLASSES, alpha=0.5, on="embedding"),
        },
        weighting=lw.weighting.Fixed({"center": 0.1}),
    )
    objective.compile(optimizer="adam")
    callback = EmbeddingEvaluation(x, y, every=1, metric="euclidean", ks=(1, 2), num_pairs=60)
    history = objective.fit(x, {"label": y}, epochs=3, batch_size=16, verbose=0, callbacks=[callback])
    predicted = objective.model.predict(x, verbose=0)["embedding"]
    _assert_logged(history, callback, predicted, epochs=3, every=1)
    assert "loss/center" in history.history


def test_callback_single_output_and_errors():
    x, y = _callback_data(n=24)
    inputs = keras.Input((FEATURES,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    callback = EmbeddingEvaluation(x, y, output=None, prefix="emb/", pairs=False)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    expected = evaluate_embeddings(model.predict(x, verbose=0), y, pairs=False)
    assert logs == pytest.approx({f"emb/{k}": v for k, v in expected.items()})

    wrong = EmbeddingEvaluation(x, y, output="features")
    wrong.set_model(_dict_model())
    with pytest.raises(ValueError, match="output='features'.*'embedding', 'logits'"):
        wrong.on_epoch_end(0, {})
    with pytest.raises(ValueError, match="EmbeddingEvaluation: `every` must be an int >= 1; received 0"):
        EmbeddingEvaluation(x, y, every=0)
    with pytest.raises(ValueError, match="EmbeddingEvaluation: `metric` must be one of"):
        EmbeddingEvaluation(x, y, metric="dot")
    with pytest.raises(ValueError, match="single sample"):  # before any training
        EmbeddingEvaluation(x[:3], [0, 1, 2])


def test_callback_get_config_round_trip():
    x, y = _callback_data(n=12)
    callback = EmbeddingEvaluation(x, y, every=3, output="emb", metric="euclidean", ks=(1, 5), far=1e-2)
    config = callback.get_config()
    again = EmbeddingEvaluation(**config)
    assert again.get_config().keys() == config.keys()
    for key, value in config.items():
        if key not in ("x", "labels"):
            assert getattr(again, key) == value
    assert keras.saving.get_registered_object("lossweave>EmbeddingEvaluation") is EmbeddingEvaluation
