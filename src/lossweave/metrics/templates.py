"""Template-based 1:1 verification, the IJB-B / IJB-C protocol: pooled features, pair scores, TAR@FAR.

IJB-B (Whitelam et al., CVPRW 2017) and IJB-C (Maze et al., ICB 2018) compare
*templates*, sets of images and video frames of one subject, not single
images. The protocol's metadata say which template and which media (an
image, or one video's frames) each face belongs to, and which template pairs
are genuine (label 1) or impostor (label 0). This module follows insightface's
evaluation script (``recognition/_evaluation_/ijb/ijb_11.py``), by which most
published IJB numbers are computed:

1. each face's feature: its embedding, L2-normalised (or kept with its norm,
   ``norm_weighted=True``: the norm weighs the face, the script's
   ``use_norm_score``), times its face-quality score if given (the
   detector's faceness score, the script's ``use_detector_score``);
2. media pooling: the mean of the features of each media *within* a template;
3. template pooling: the sum of its media features, L2-normalised (a sum and
   a mean have one direction);
4. a pair's score: the cosine of its two template features;
5. the ROC of ``sklearn.metrics.roc_curve`` (with its default
   ``drop_intermediate=True``, as the script calls it), and the TAR at each
   FAR of ``1e-6 ... 1e-1`` read at the ROC point whose FAR is **nearest**
   to the target (no interpolation; that point may lie above the target;
   among points of equal FAR the highest TAR), as the script does.
   ``rule="at_most"`` gives the library's conservative reading instead
   (:func:`lossweave.metrics.tar_at_far`: the best TAR whose FAR is at most
   the target).

The script's flip test (``use_flip_test``: the sum of the embeddings of an
image and of its mirror image) happens before this module: pass the summed
embeddings. The loaders read the protocol's files as distributed with
insightface's IJB package (``meta/ijbc_face_tid_mid.txt``,
``meta/ijbc_template_pair_label.txt``, ``meta/ijbc_name_5pts_score.txt``; the
same with ``ijbb_``). Nothing here downloads anything.
"""

import os
import warnings
from typing import NamedTuple

import numpy as np

from lossweave import arguments
from lossweave.metrics import _checks
from lossweave.metrics.verification import _as_pairs, tar_at_far

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RULES = ("nearest", "at_most")


class IJBProtocol(NamedTuple):
    """The metadata of one IJB target, as :func:`load_ijb_protocol` reads them.

    Attributes:
        images: ``(n,)`` str image names, in the order of the files (the
            order the embeddings must have).
        templates: ``(n,)`` int64 template id of each image.
        medias: ``(n,)`` int64 media id of each image.
        template_1, template_2: ``(pairs,)`` int64 template ids of each pair.
        labels: ``(pairs,)`` int64, 1 for a genuine pair and 0 for an impostor.
        faceness: ``(n,)`` float64 detector scores, or ``None`` without the score file.
    """

    images: np.ndarray
    templates: np.ndarray
    medias: np.ndarray
    template_1: np.ndarray
    template_2: np.ndarray
    labels: np.ndarray
    faceness: object


class TemplateVerificationResult(NamedTuple):
    """Result of :func:`template_verification`.

    Attributes:
        scores: ``(pairs,)`` cosine of each pair's template features.
        tar: ``{far: tar}`` for each requested FAR.
        fpr, tpr, thresholds: the ROC (``sklearn.metrics.roc_curve``; a pair
            is accepted if its score is ``>=`` the threshold).
        auc: the area under that ROC.
    """

    scores: np.ndarray
    tar: dict
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


# ------------------------------------------------------------------- loaders
def _table(path, columns, what, dtype=str):
    """The whitespace-separated rows of ``path`` as a 2-D array of at least ``columns`` columns."""
    try:
        with warnings.catch_warnings():  # an empty file: said below, as an error
            warnings.simplefilter("ignore", UserWarning)
            rows = np.loadtxt(path, dtype=dtype, ndmin=2, comments=None)
    except ValueError as error:
        raise ValueError(f"{path}: could not read it as {what}: {error}") from None
    if rows.shape[0] == 0:
        raise ValueError(f"{path}: the file has no lines; expected {what}.")
    if rows.shape[1] < columns or (columns == 3 and rows.shape[1] != 3):
        raise ValueError(f"{path}: expected {what} ({columns} columns); received {rows.shape[1]} columns.")
    return rows


def _integers(column, path, name):
    try:
        return column.astype(np.int64)
    except ValueError:
        raise ValueError(f"{path}: expected integer {name}s; received e.g. {column[0]!r}.") from None


def read_template_media(path):
    """Read ``*_face_tid_mid.txt``: one ``image_name template_id media_id`` line per face.

    Args:
        path: the file.

    Returns:
        ``(images, templates, medias)``: ``(n,)`` str, int64 and int64 arrays.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "ijbc_face_tid_mid.txt")
        >>> _ = open(path, "w").write("1.jpg 1 69544\\n2.jpg 1 3720\\n")
        >>> images, templates, medias = read_template_media(path)
        >>> images.tolist(), templates.tolist(), medias.tolist()
        (['1.jpg', '2.jpg'], [1, 1], [69544, 3720])
    """
    what = "'image_name template_id media_id' lines"
    rows = _table(path, 3, what)
    return rows[:, 0], _integers(rows[:, 1], path, "template id"), _integers(rows[:, 2], path, "media id")


def read_template_pairs(path):
    """Read ``*_template_pair_label.txt``: one ``template_1 template_2 label`` line per pair (label 1: genuine).

    Returns:
        ``(template_1, template_2, labels)``: three ``(pairs,)`` int64 arrays.
    """
    rows = _table(path, 3, "'template_1 template_2 label' lines", dtype=np.int64)
    labels = rows[:, 2]
    if not np.all(np.isin(labels, (0, 1))):
        bad = np.unique(labels[~np.isin(labels, (0, 1))])[:5].tolist()
        raise ValueError(f"{path}: expected labels 0 (impostor) or 1 (genuine); received {bad}.")
    return rows[:, 0], rows[:, 1], labels


def read_faceness_scores(path):
    """Read ``*_name_5pts_score.txt``: ``image_name x1 y1 ... x5 y5 score`` lines; the score is the last column.

    Returns:
        ``(images, scores)``: ``(n,)`` str names and float64 detector scores.
    """
    rows = _table(path, 2, "'image_name ... score' lines (the score last)")
    try:
        scores = rows[:, -1].astype(np.float64)
    except ValueError:
        raise ValueError(f"{path}: expected a number in the last column; received e.g. {rows[0, -1]!r}.") from None
    return rows[:, 0], scores


def load_ijb_protocol(folder, target="IJBC"):
    """Read one IJB target's metadata from its ``meta`` folder, under the file names it is distributed with.

    ``<t>_face_tid_mid.txt``, ``<t>_template_pair_label.txt`` and, if present,
    ``<t>_name_5pts_score.txt`` (``<t>`` is ``ijbb`` or ``ijbc``). The score
    file lists the images in the order of the first file (insightface's script
    relies on it); a different order is an error.

    Args:
        folder: the folder holding the files (e.g. ``IJBC/meta``).
        target: ``"IJBB"`` or ``"IJBC"``.

    Returns:
        An :class:`IJBProtocol`.
    """
    target = arguments.choice(target, ("IJBB", "IJBC"), "target", "load_ijb_protocol")
    prefix = os.path.join(os.fspath(folder), target.lower())
    images, templates, medias = read_template_media(f"{prefix}_face_tid_mid.txt")
    template_1, template_2, labels = read_template_pairs(f"{prefix}_template_pair_label.txt")
    faceness = None
    if os.path.exists(f"{prefix}_name_5pts_score.txt"):
        names, faceness = read_faceness_scores(f"{prefix}_name_5pts_score.txt")
        if names.shape != images.shape or not np.array_equal(names, images):
            raise ValueError(
                f"{prefix}_name_5pts_score.txt: expected the images of {prefix}_face_tid_mid.txt in the same order "
                f"({images.shape[0]} lines); received {names.shape[0]} lines in another order or with other names."
            )
    return IJBProtocol(images, templates, medias, template_1, template_2, labels, faceness)


# ------------------------------------------------------------------- pooling
def _ids(values, n, name):
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"expected {name} of shape ({n},), one per embedding row; received shape {values.shape}.")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"expected integer {name}; received dtype {values.dtype}.")
    return values.astype(np.int64)


def template_features(embeddings, templates, medias, quality=None, norm_weighted=False):
    """Media-pooled, then template-pooled unit features (insightface's ``image2template_feature``).

    A face's feature is its unit embedding (or its raw embedding,
    ``norm_weighted=True``), times ``quality`` if given; a media's feature is
    the mean over its faces in the template; a template's is the sum of its
    media features, L2-normalised.

    Args:
        embeddings: ``(n, dim)`` per-image embeddings.
        templates: ``(n,)`` integer template id of each image.
        medias: ``(n,)`` integer media id of each image.
        quality: optional ``(n,)`` non-negative face-quality weights (the
            faceness score of :func:`read_faceness_scores`).
        norm_weighted: keep each embedding's norm as its weight instead of
            normalising it first.

    Returns:
        ``(features, template_ids)``: ``(T, dim)`` float64 unit rows and the
        ``(T,)`` sorted template ids they belong to.

    Raises:
        ValueError: bad shapes, NaN values, a zero embedding (without
            ``norm_weighted``), negative quality, or a template whose pooled
            feature is zero (every face weighted 0).

    Example:
        >>> x = np.array([[1., 0.], [0., 1.], [0., 3.], [1., 1.]])
        >>> features, ids = template_features(x, [7, 7, 7, 9], [1, 2, 2, 5])
        >>> ids.tolist(), np.round(features, 4).tolist()   # template 7: media 1 (1, 0) + media 2 (0, 1)
        ([7, 9], [[0.7071, 0.7071], [0.7071, 0.7071]])
    """
    from scipy import sparse

    x = _checks.as_embeddings(embeddings)
    n = x.shape[0]
    templates, medias = _ids(templates, n, "templates"), _ids(medias, n, "medias")
    norm_weighted = arguments.boolean(norm_weighted, "norm_weighted", "template_features")
    weight = np.ones(n)
    if quality is not None:
        weight = np.asarray(quality, dtype=np.float64)
        if weight.shape != (n,) or not np.all(np.isfinite(weight)) or np.any(weight < 0):
            raise ValueError(
                f"expected quality: ({n},) finite scores >= 0, one per embedding row; received shape "
                f"{weight.shape} with values in [{np.min(weight, initial=np.inf)}, {np.max(weight, initial=-np.inf)}]."
            )
    if not norm_weighted:
        x = _checks.normalize(x)
    template_ids, template_row = np.unique(templates, return_inverse=True)
    _, media_group, media_size = np.unique(
        np.stack([templates, medias], axis=1), axis=0, return_inverse=True, return_counts=True
    )
    media_group = media_group.reshape(-1)
    # A template's feature is sum over its media of the media mean: sum_i w_i x_i / |media(i)|.
    pooling = sparse.csr_matrix(
        (weight / media_size[media_group], (template_row.reshape(-1), np.arange(n))), shape=(template_ids.size, n)
    )
    features = np.asarray(pooling @ x)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if np.any(norms == 0):
        zero = template_ids[norms[:, 0] == 0]
        raise ValueError(
            f"{zero.size} template(s) have a zero pooled feature (e.g. {zero[:5].tolist()}): every face of "
            "them has weight 0 (quality 0, or a zero embedding with norm_weighted=True), so they have no "
            "direction. Give them a positive quality or drop their pairs."
        )
    return features / norms, template_ids


def template_pair_scores(features, template_ids, template_1, template_2):
    """The cosine of each pair's template features (the rows of ``features`` are unit).

    Raises:
        ValueError: a pair names a template that is not among ``template_ids``.
    """
    template_ids = np.asarray(template_ids)
    rows = []
    for name, pair_ids in (("template_1", template_1), ("template_2", template_2)):
        pair_ids = np.asarray(pair_ids).reshape(-1)
        where = np.clip(np.searchsorted(template_ids, pair_ids), 0, template_ids.size - 1)
        unknown = template_ids[where] != pair_ids
        if np.any(unknown):
            missing = np.unique(pair_ids[unknown])
            raise ValueError(
                f"{int(unknown.sum())} pair(s) name a {name} that no image belongs to "
                f"({missing.size} unknown id(s), e.g. {missing[:5].tolist()}); expected ids of the templates "
                "file. Check that the pair file and the template/media file are of the same target."
            )
        rows.append(where)
    if rows[0].shape != rows[1].shape:
        raise ValueError(
            f"expected as many template_1 as template_2 ids; received {rows[0].size} and {rows[1].size}."
        )
    return np.sum(features[rows[0]] * features[rows[1]], axis=1)


# ----------------------------------------------------------------------- ROC
def tar_at_fars(scores, labels, fars=FARS, rule="nearest"):
    """TAR at each FAR, and the ROC it is read from.

    Args:
        scores: ``(pairs,)`` similarities (higher = more alike).
        labels: ``(pairs,)`` 1/0 or booleans, 1 for a genuine pair.
        fars: the target false accept rates, each in ``[0, 1]``.
        rule: ``"nearest"``: the TAR of the ROC point (``roc_curve`` with
            ``drop_intermediate=True``) whose FAR is nearest to the target,
            the highest TAR among points of that FAR (insightface's
            ``ijb_11.py``); ``"at_most"``: the best TAR whose FAR is at most
            the target (:func:`lossweave.metrics.tar_at_far`).

    Returns:
        ``(tar, fpr, tpr, thresholds)``: ``{far: tar}`` and the ROC.

    Raises:
        ValueError: only genuine or only impostor pairs (no ROC), NaN scores,
            shapes that differ, or a bad ``far`` or ``rule``.

    Example:
        >>> s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
        >>> same = [1, 0, 1, 1, 0, 0]
        >>> tar, fpr, tpr, _ = tar_at_fars(s, same, fars=(0.3, 0.5))
        >>> np.round(fpr, 3).tolist(), np.round(tpr, 3).tolist()
        ([0.0, 0.0, 0.333, 0.333, 1.0], [0.0, 0.333, 0.333, 1.0, 1.0])
        >>> {k: round(v, 3) for k, v in tar.items()}   # 0.3 and 0.5: nearest FAR 1/3
        {0.3: 1.0, 0.5: 1.0}
        >>> tar_at_fars(s, same, fars=(0.3,), rule="at_most")[0]
        {0.3: 0.3333333333333333}
    """
    from sklearn.metrics import roc_curve

    scores, issame = _as_pairs(scores, labels)
    rule = arguments.choice(rule, RULES, "rule", "tar_at_fars")
    fars = tuple(arguments.number(f, f"fars[{i}]", "tar_at_fars", low=0.0, high=1.0) for i, f in enumerate(fars))
    fpr, tpr, thresholds = roc_curve(issame, scores)
    if rule == "at_most":
        return {far: tar_at_far(scores, issame, far) for far in fars}, fpr, tpr, thresholds
    # Descending FAR: among points of equal FAR the first is the one of the highest TAR.
    descending_fpr, descending_tpr = fpr[::-1], tpr[::-1]
    tar = {far: float(descending_tpr[np.argmin(np.abs(descending_fpr - far))]) for far in fars}
    return tar, fpr, tpr, thresholds


def template_verification(embeddings, templates, medias, template_1, template_2, labels, quality=None,
                          norm_weighted=False, fars=FARS, rule="nearest"):
    """The IJB-B / IJB-C 1:1 verification protocol from per-image embeddings.

    :func:`template_features`, :func:`template_pair_scores`, then
    :func:`tar_at_fars` and the ROC's AUC (``sklearn.metrics.auc``).

    Args:
        embeddings: ``(n, dim)`` per-image embeddings, in the order of the
            protocol's image list.
        templates, medias: ``(n,)`` integer ids of each image.
        template_1, template_2: ``(pairs,)`` template ids of each pair.
        labels: ``(pairs,)`` 1 (genuine) or 0 (impostor).
        quality: optional ``(n,)`` face-quality weights (the faceness scores).
        norm_weighted: weigh each face by its embedding's norm.
        fars: the FARs of the TAR table (default ``1e-6 ... 1e-1``).
        rule: how a TAR is read (see :func:`tar_at_fars`).

    Returns:
        A :class:`TemplateVerificationResult`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> centers = rng.normal(size=(4, 8))
        >>> subject = np.repeat(np.arange(4), 6)               # 4 subjects, 6 images each
        >>> x = centers[subject] + 0.3 * rng.normal(size=(24, 8))
        >>> templates = np.arange(24) // 3                      # 8 templates of 3 images
        >>> medias = np.arange(24) // 2                         # media of 2 images
        >>> t1, t2 = np.array([0, 2, 4, 0, 2, 4]), np.array([1, 3, 5, 2, 4, 7])
        >>> result = template_verification(x, templates, medias, t1, t2, [1, 1, 1, 0, 0, 0], fars=(1e-1,))
        >>> result.tar, result.auc
        ({0.1: 1.0}, 1.0)
    """
    from sklearn.metrics import auc

    features, ids = template_features(embeddings, templates, medias, quality, norm_weighted)
    scores = template_pair_scores(features, ids, template_1, template_2)
    tar, fpr, tpr, thresholds = tar_at_fars(scores, labels, fars, rule)
    return TemplateVerificationResult(scores, tar, fpr, tpr, thresholds, float(auc(fpr, tpr)))
