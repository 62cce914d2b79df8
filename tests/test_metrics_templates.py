"""The IJB-B / IJB-C template protocol (lossweave.metrics.templates) against a loop written from the protocol.

The reference pools template by template and media by media (insightface's
``recognition/_evaluation_/ijb/ijb_11.py``: the mean of each media's face
features, the sum over the media, L2-normalised; a pair's score the cosine)
and reads each TAR with the script's own rule: the ROC of
``sklearn.metrics.roc_curve``, flipped, and the first point of smallest
``|fpr - far|``. NumPy only: one backend pass. Nothing is downloaded: the
protocol's files are written to ``tmp_path``.
"""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from conftest import one_backend
from lossweave.metrics import (
    load_ijb_protocol,
    read_faceness_scores,
    read_template_media,
    read_template_pairs,
    tar_at_far,
    tar_at_fars,
    template_features,
    template_pair_scores,
    template_verification,
)

pytestmark = one_backend
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


# ------------------------------------------------------------ NumPy reference
def ref_features(x, templates, medias, quality=None, norm_weighted=False):
    """``{template: unit feature}``, one template and one media at a time."""
    out = {}
    for t in sorted(set(templates.tolist())):
        media_features = []
        for m in sorted(set(medias[templates == t].tolist())):
            faces = []
            for i in range(len(x)):
                if templates[i] == t and medias[i] == m:
                    face = x[i] if norm_weighted else x[i] / np.linalg.norm(x[i])
                    faces.append(face * (1.0 if quality is None else quality[i]))
            media_features.append(np.mean(faces, axis=0))
        total = np.sum(media_features, axis=0)
        out[t] = total / np.linalg.norm(total)
    return out


def ref_scores(features, t1, t2):
    return np.array([features[a] @ features[b] for a, b in zip(t1.tolist(), t2.tolist())])


def ref_tar_nearest(scores, labels, far):
    """ijb_11.py's rule: flip the ROC, then min over (|fpr - far|, index) pairs."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, index = min(zip(abs(fpr - far), range(len(fpr))))
    return tpr[index]


def synthetic(seed=0, subjects=12, templates_per=4, dim=8, pairs=400):
    """Faces of ``subjects`` subjects in templates of 1..6 faces over 1..3 media; random pairs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(subjects, dim))
    x, templates, medias, owner = [], [], [], []
    template = 100
    for s in range(subjects):
        for _ in range(templates_per):
            faces = rng.integers(1, 7)
            media_ids = rng.integers(0, 3, faces) + 10 * template      # ids shared within a template only
            for m in media_ids:
                x.append(centers[s] + 0.8 * rng.normal(size=dim))
                templates.append(template)
                medias.append(m)
            owner.append(s)
            template += 1
    ids = np.arange(100, template)
    t1, t2 = rng.choice(ids, pairs), rng.choice(ids, pairs)
    keep = t1 != t2
    t1, t2 = t1[keep], t2[keep]
    owner = np.array(owner)
    labels = (owner[t1 - 100] == owner[t2 - 100]).astype(int)
    return np.array(x), np.array(templates), np.array(medias), t1, t2, labels


# ---------------------------------------------------------------- the figures
@pytest.mark.parametrize("weighting", ["plain", "quality", "norm", "quality+norm"])
def test_pipeline_matches_the_loop_reference(weighting):
    x, templates, medias, t1, t2, labels = synthetic()
    x = x * np.random.default_rng(1).uniform(0.5, 3.0, (len(x), 1))   # norms that matter when kept
    quality = np.random.default_rng(2).uniform(0.1, 1.0, len(x)) if "quality" in weighting else None
    norm_weighted = "norm" in weighting
    result = template_verification(x, templates, medias, t1, t2, labels, quality=quality,
                                   norm_weighted=norm_weighted, fars=FARS)
    reference = ref_features(x, templates, medias, quality, norm_weighted)
    expected = ref_scores(reference, t1, t2)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-12, atol=1e-12)
    assert 0 < labels.sum() < labels.size
    for far in FARS:
        assert result.tar[far] == ref_tar_nearest(expected, labels, far), far
    fpr, tpr, thresholds = roc_curve(labels, expected)
    np.testing.assert_allclose(result.fpr, fpr)
    np.testing.assert_allclose(result.tpr, tpr)
    # Every ROC point is the rates of "score >= threshold" (no library in the loop).
    genuine, impostor = result.scores[labels == 1], result.scores[labels == 0]
    for f, t, thr in zip(result.fpr, result.tpr, result.thresholds):
        assert f == np.mean(impostor >= thr) and t == np.mean(genuine >= thr)
    features, ids = template_features(x, templates, medias, quality, norm_weighted)
    np.testing.assert_allclose(features, np.array([reference[t] for t in ids.tolist()]), atol=1e-12)


def test_weightings_change_the_scores():
    x, templates, medias, t1, t2, labels = synthetic(3)
    x = x * np.random.default_rng(1).uniform(0.5, 3.0, (len(x), 1))
    plain = template_verification(x, templates, medias, t1, t2, labels).scores
    normed = template_verification(x, templates, medias, t1, t2, labels, norm_weighted=True).scores
    quality = template_verification(x, templates, medias, t1, t2, labels,
                                    quality=np.linspace(0.1, 1.0, len(x))).scores
    assert not np.allclose(plain, normed) and not np.allclose(plain, quality)


def test_nearest_rule_on_a_hand_case_and_at_most():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    labels = [1, 0, 1, 1, 0, 0]
    # roc_curve keeps (0,0) (0,1/3) (1/3,1/3) (1/3,1) (1,1): it drops (1/3,2/3) and (2/3,1).
    tar, fpr, tpr, _ = tar_at_fars(scores, labels, fars=(0.0, 0.1, 0.3, 0.7, 0.9))
    assert tar == {0.0: 1 / 3, 0.1: 1 / 3, 0.3: 1.0, 0.7: 1.0, 0.9: 1.0}
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1])
    at_most, *_ = tar_at_fars(scores, labels, fars=(0.0, 0.3, 0.7), rule="at_most")
    assert at_most == {f: tar_at_far(scores, labels, f) for f in (0.0, 0.3, 0.7)}
    assert at_most[0.3] == 1 / 3 < tar[0.3]          # nearest may read a point above the target FAR


# ------------------------------------------------------------------ edge cases
def test_media_weigh_equally_whatever_their_number_of_frames():
    """Template 1: a video of five frames along x and one photo along y: the two media count the same."""
    x = np.array([[1.0, 0.0]] * 5 + [[0.0, 2.0]] + [[3.0, 0.0]])   # the last: template 2, one image
    templates = np.array([1] * 6 + [2])
    medias = np.array([7] * 5 + [8] + [9])
    features, ids = template_features(x, templates, medias)
    assert ids.tolist() == [1, 2]
    np.testing.assert_allclose(features, [[2 ** -0.5, 2 ** -0.5], [1.0, 0.0]])
    np.testing.assert_allclose(template_pair_scores(features, ids, [1], [2]), [2 ** -0.5])
    # One media id in two templates: pooled per template (ids are not global).
    features, _ = template_features(x, np.array([1] * 5 + [2, 2]), np.array([7] * 6 + [7]))
    np.testing.assert_allclose(features[0], [1.0, 0.0])


def test_bad_pairs_and_labels_say_what_is_wrong():
    x, templates, medias, t1, t2, labels = synthetic(4, subjects=3, pairs=30)
    with pytest.raises(ValueError, match=r"1 pair\(s\) name a template_2 that no image belongs to .*\[999\]"):
        template_verification(x, templates, medias, t1, np.concatenate([t2[:-1], [999]]), labels)
    with pytest.raises(ValueError, match="expected both genuine .* received 0 genuine"):
        template_verification(x, templates, medias, t1, t2, np.zeros_like(labels))
    with pytest.raises(ValueError, match="expected both genuine"):
        tar_at_fars([0.2, 0.3], [1, 1])
    with pytest.raises(ValueError, match=r"expected templates of shape \(\d+,\)"):
        template_features(x, templates[:-1], medias)
    with pytest.raises(ValueError, match="quality"):
        template_features(x, templates, medias, quality=-np.ones(len(x)))
    zero = np.ones(len(x))
    zero[templates == templates[0]] = 0.0
    with pytest.raises(ValueError, match=rf"1 template\(s\) have a zero pooled feature \(e.g. \[{templates[0]}\]\)"):
        template_features(x, templates, medias, quality=zero)
    with pytest.raises(ValueError, match="`rule` must be one of"):
        tar_at_fars([0.2, 0.3], [1, 0], rule="interpolate")


# ------------------------------------------------------------------- loaders
def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_loaders_read_the_distributed_files(tmp_path):
    x, templates, medias, t1, t2, labels = synthetic(5, subjects=4, pairs=60)
    names = [f"{i + 1}.jpg" for i in range(len(x))]
    scores = np.round(np.random.default_rng(6).uniform(0.5, 2.0, len(x)), 4)
    _write(tmp_path / "ijbc_face_tid_mid.txt", [f"{n} {t} {m}" for n, t, m in zip(names, templates, medias)])
    _write(tmp_path / "ijbc_template_pair_label.txt", [f"{a} {b} {c}" for a, b, c in zip(t1, t2, labels)])
    _write(tmp_path / "ijbc_name_5pts_score.txt",
           [f"{n} " + " ".join(["12.5"] * 10) + f" {s}" for n, s in zip(names, scores)])
    protocol = load_ijb_protocol(tmp_path, "IJBC")
    assert protocol.images.tolist() == names
    np.testing.assert_array_equal(protocol.templates, templates)
    np.testing.assert_array_equal(protocol.medias, medias)
    np.testing.assert_array_equal(np.stack([protocol.template_1, protocol.template_2, protocol.labels]),
                                  np.stack([t1, t2, labels]))
    np.testing.assert_allclose(protocol.faceness, scores)
    result = template_verification(x, protocol.templates, protocol.medias, protocol.template_1,
                                   protocol.template_2, protocol.labels, quality=protocol.faceness)
    expected = ref_scores(ref_features(x, templates, medias, scores), t1, t2)
    np.testing.assert_allclose(result.scores, expected, atol=1e-12)
    # The score file is optional; another order than the image list is refused.
    assert load_ijb_protocol(tmp_path, "IJBC").faceness is not None
    (tmp_path / "ijbc_name_5pts_score.txt").rename(tmp_path / "unused.txt")
    assert load_ijb_protocol(tmp_path, "IJBC").faceness is None
    _write(tmp_path / "ijbc_name_5pts_score.txt", [f"{n} 0.9" for n in reversed(names)])
    with pytest.raises(ValueError, match="same order"):
        load_ijb_protocol(tmp_path, "IJBC")
    with pytest.raises(FileNotFoundError):
        load_ijb_protocol(tmp_path, "IJBB")


def test_loaders_refuse_malformed_files(tmp_path):
    bad_columns = _write(tmp_path / "a.txt", ["1.jpg 1", "2.jpg 1"])
    with pytest.raises(ValueError, match=r"expected 'image_name template_id media_id' lines \(3 columns\); "
                                         r"received 2 columns"):
        read_template_media(bad_columns)
    with pytest.raises(ValueError, match="expected integer template ids"):
        read_template_media(_write(tmp_path / "b.txt", ["1.jpg one 3"]))
    with pytest.raises(ValueError, match=r"expected labels 0 \(impostor\) or 1 \(genuine\); received \[2\]"):
        read_template_pairs(_write(tmp_path / "c.txt", ["1 2 1", "3 4 2"]))
    with pytest.raises(ValueError, match="could not read it as 'template_1 template_2 label' lines"):
        read_template_pairs(_write(tmp_path / "d.txt", ["1 2 x"]))
    with pytest.raises(ValueError, match="expected a number in the last column"):
        read_faceness_scores(_write(tmp_path / "e.txt", ["1.jpg 1 2 high"]))
    with pytest.raises(ValueError, match="has no lines"):
        read_template_pairs(_write(tmp_path / "f.txt", []))
    names, scores = read_faceness_scores(_write(tmp_path / "g.txt", ["a.jpg 1 2 3 4 5 6 7 8 9 10 0.75"]))
    assert names.tolist() == ["a.jpg"] and scores.tolist() == [0.75]
