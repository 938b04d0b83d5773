"""Hierarchical clustering of student neurons: distances, average linkage, the gamma cut
and the beta alignment filter (paper section 5 step 3, appendix A.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import pdist, squareform

Array = np.ndarray


def pairwise_distances(F: Array, metric: str, sign_invariant: bool) -> Array:
    """Condensed distance vector between the rows of ``F``.

    Parameters
    ----------
    F : ndarray of float64, shape (n, k)
        One feature vector ``[w; b]`` per neuron.
    metric : {"euclidean", "cosine"}
    sign_invariant : bool
        Distance between ``{v, -v}`` classes: ``min(||u - v||, ||u + v||)`` or
        ``1 - |cos(u, v)|``. This is the distance after the best sign alignment of every
        pair, so no arbitrary per-vector sign rule can split a cluster of duplicates.

    Returns
    -------
    ndarray of float64, shape (n (n - 1) / 2,)
    """
    F = np.asarray(F, dtype=np.float64)
    if metric == "cosine":
        cos = _pairwise_cosines(F)
        return 1.0 - (np.abs(cos) if sign_invariant else cos)
    if metric != "euclidean":
        raise ValueError(f"metric={metric!r}; allowed: euclidean, cosine")
    d = pdist(F, "euclidean")
    if not sign_invariant:
        return d
    # ||u + v||^2 = |u|^2 + |v|^2 + 2 u.v; used only where u.v < 0, i.e. where the other
    # sign is the closer one (there pdist's exact ||u - v|| is the larger of the two).
    sq = np.einsum("ij,ij->i", F, F)
    iu = np.triu_indices(len(F), k=1)
    dot = (F @ F.T)[iu]
    flipped = dot < 0
    d[flipped] = np.sqrt(np.maximum(sq[iu[0][flipped]] + sq[iu[1][flipped]] + 2.0 * dot[flipped], 0.0))
    return d


def _pairwise_cosines(F: Array) -> Array:
    """Condensed cosines between rows; a zero row has cosine 0 with everything."""
    norm = np.linalg.norm(F, axis=1)
    U = F / np.where(norm > 0, norm, 1.0)[:, None]
    return np.clip((U @ U.T)[np.triu_indices(len(F), k=1)], -1.0, 1.0)


def average_linkage(distances: Array) -> Array:
    """scipy's average linkage (UPGMA) on a condensed distance vector; shape (n-1, 4)."""
    return linkage(distances, method="average")


def min_cluster_size(gamma: float, n_students: int) -> int:
    """Smallest size of a "big" cluster: ``ceil(gamma N)`` (a size ``>= gamma N``)."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma={gamma!r}; allowed: 0 < gamma <= 1")
    size = math.ceil(gamma * n_students - 1e-9)
    if size < 2:
        raise ValueError(
            f"gamma * N = {gamma} * {n_students} < 2: a cluster of one neuron cannot show alignment; "
            "use more students or a larger gamma"
        )
    return size


def _node_sizes(Z: Array) -> Array:
    """Size of every node of the linkage: leaves ``0..n-1``, then merge ``k`` as ``n + k``."""
    n = len(Z) + 1
    size = np.ones(2 * n - 1, dtype=np.int64)
    size[n:] = Z[:, 3].astype(np.int64)
    return size


def cluster_counts(Z: Array, good: Array) -> Array:
    """Number of current clusters whose node is ``good`` after each merge.

    ``good`` is a boolean array over the ``2n - 1`` nodes. ``counts[k]`` is the count
    once merges ``0..k`` of the linkage ``Z`` are applied.
    """
    n = len(Z) + 1
    left, right = Z[:, 0].astype(np.int64), Z[:, 1].astype(np.int64)
    delta = good[n:].astype(np.int64) - good[left] - good[right]
    return int(good[:n].sum()) + np.cumsum(delta)


def node_support(Z: Array, groups: Array | None = None) -> Array:
    """Size of every node of the linkage, counted in distinct ``groups`` (students).

    Without ``groups`` it is the number of neurons. With them, two duplicates of a neuron
    in one student count once: a cluster is evidence of a teacher neuron when *different*
    students agree on it, and a zero-type pair inside one student must not pass for two.
    """
    if groups is None:
        return _node_sizes(Z)
    n = len(Z) + 1
    _, ids = np.unique(np.asarray(groups), return_inverse=True)
    bits = [1 << int(g) for g in ids] + [0] * (n - 1)  # Python ints: any number of students
    for k in range(n - 1):
        bits[n + k] = bits[int(Z[k, 0])] | bits[int(Z[k, 1])]
    return np.array([b.bit_count() for b in bits], dtype=np.int64)


def big_cluster_counts(Z: Array, min_size: int, groups: Array | None = None) -> Array:
    """Number of clusters with a support (:func:`node_support`) of at least ``min_size``
    after each merge (:func:`cluster_counts` with ``good = support >= min_size``)."""
    return cluster_counts(Z, node_support(Z, groups) >= min_size)


def aligned_nodes(Z: Array, weights: Array, min_size: int, beta: float, sign_invariant: bool,
                  groups: Array | None = None, max_pairs: int = 2000) -> Array:
    """Which nodes of the dendrogram are big (support ``>= min_size``, see
    :func:`node_support`) and aligned (median angle of their input weight vectors
    ``<= beta``).

    Every node's members are a contiguous run of the dendrogram's leaf order. Nodes with
    more than ``max_pairs`` pairs estimate the median from ``max_pairs`` random pairs
    (seeded by the node, so the result is deterministic).
    """
    n = len(Z) + 1
    size = _node_sizes(Z)
    order = leaves_list(Z)
    start = np.zeros(2 * n - 1, dtype=np.int64)
    for k in range(n - 2, -1, -1):  # parents before children
        left, right = int(Z[k, 0]), int(Z[k, 1])
        start[left] = start[n + k]
        start[right] = start[n + k] + size[left]
    norm = np.linalg.norm(weights, axis=1)
    U = weights / np.where(norm > 0, norm, 1.0)[:, None]
    good = np.zeros(2 * n - 1, dtype=bool)
    for node in np.flatnonzero((node_support(Z, groups) >= min_size) & (size >= 2)):
        rows = order[start[node]:start[node] + size[node]]
        if size[node] * (size[node] - 1) // 2 <= max_pairs:
            angle = median_angle(U[rows], sign_invariant)
        else:
            rng = np.random.default_rng(int(node))
            i, j = rng.integers(0, len(rows), size=(2, 2 * max_pairs))
            i, j = rows[i[i != j][:max_pairs]], rows[j[i != j][:max_pairs]]
            cos = np.clip(np.einsum("ij,ij->i", U[i], U[j]), -1.0, 1.0)
            angle = float(np.median(np.arccos(np.abs(cos) if sign_invariant else cos)))
        good[node] = angle <= beta
    return good


def choose_cut(Z: Array, counts: Array, lowest: bool = False) -> tuple[int, float]:
    """The dendrogram cut that maximises ``counts`` (number of big, or big and aligned,
    clusters after each merge; :func:`big_cluster_counts`, :func:`cluster_counts`).

    Tie-break: the *top of the first run* of merges at the maximum. The count first
    reaches its maximum when the last true cluster reaches the size threshold; at that
    height other true clusters may still be missing duplicates that differ by the same
    tiny noise (their merge order is random), so the lowest maximal cut loses them. Going
    up while the count stays maximal completes them; the run ends when two counted
    clusters merge or, with ``cut="aligned"``, when a cluster has absorbed so many
    distractors that it fails the beta filter. This is also the choice of the paper's
    reference code.

    ``lowest=True``: the bottom of that run instead, for a cut at which a cluster must hold
    a neuron of *every* student. There the count reaches its maximum only once every true
    cluster is complete, and going up adds nothing but distractors: with no two counted
    clusters left to merge, the run can go on until the median angle, which a majority
    of exact copies keeps at zero, lets through distractors as far as 50 degrees from
    the teacher neuron (planted 3-6-8-1 students, tests/test_layerwise.py).

    Returns
    -------
    k : int
        Index of the last merge applied (merges ``0..k`` are in).
    height : float
        A cut height strictly between merge ``k`` and merge ``k + 1`` (their midpoint), or
        just above the last merge when ``k`` is the last one.
    """
    at_max = counts == counts.max()
    k = int(np.argmax(at_max))
    while not lowest and k + 1 < len(counts) and at_max[k + 1]:
        k += 1
    h = Z[k, 2]
    if k + 1 < len(Z):
        return k, float(0.5 * (h + Z[k + 1, 2]))
    return k, float(h + max(1e-12, 1e-9 * abs(h)))


def labels_after(Z: Array, k: int) -> Array:
    """Flat cluster labels ``0..K-1`` (in order of first appearance) after merges ``0..k``."""
    n = len(Z) + 1
    parent = np.arange(2 * n - 1)
    for i in range(k + 1):
        parent[int(Z[i, 0])] = n + i
        parent[int(Z[i, 1])] = n + i
    root = np.arange(n)
    while True:  # follow parent pointers until every leaf sits at its root (depth <= n)
        nxt = parent[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, labels = np.unique(root, return_inverse=True)
    first = {}
    for lab in labels:
        first.setdefault(int(lab), len(first))
    return np.array([first[int(lab)] for lab in labels], dtype=np.int64)


def pairwise_angles(W: Array, sign_invariant: bool) -> Array:
    """Angles (radians) between all pairs of rows of ``W``; ``min(t, pi - t)`` if sign-invariant.

    A zero row makes an angle of ``pi/2`` with everything (it has no direction).
    """
    cos = _pairwise_cosines(W)
    if sign_invariant:
        cos = np.abs(cos)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def median_angle(W: Array, sign_invariant: bool) -> float:
    """Median pairwise angle within a cluster of weight vectors (0 for a single vector)."""
    if len(W) < 2:
        return 0.0
    return float(np.median(pairwise_angles(W, sign_invariant)))


@dataclass(frozen=True)
class LayerClusters:
    """Result of clustering one layer's neurons of N students.

    Attributes
    ----------
    labels : ndarray of int, shape (n,)
        Flat cluster of every neuron at the chosen cut (``0..K-1``).
    kept : tuple of int
        Clusters that become reconstructed neurons, in output order.
    rejected : dict int -> str
        Every other cluster with the reason: ``"small"`` (support below ``min_size``
        neurons) or ``"unaligned"`` (median angle above ``beta``).
    cut_height : float
        The chosen dendrogram cut (between merge ``cut_index`` and the next).
    cut_index : int
    linkage : ndarray, shape (n - 1, 4)
        scipy linkage matrix (average linkage).
    median_angle : dict int -> float
        Median pairwise angle (radians) of the input weight vectors of each big cluster
        (before :func:`merge_split_clusters`).
    min_size : int
        ``ceil(gamma N)``.
    metric : str
        ``"euclidean"`` or ``"cosine"``.
    sign_invariant : bool
        Whether distances and angles were taken up to the sign of the vectors.
    features : ndarray, shape (n, k)
        The clustered vectors (``[w; b]``, unit norm for positive-scaling activations).
    gamma, beta : float
    n_students : int
    info : dict
        ``merged`` (groups of big clusters re-united), ``n_big`` (big clusters at the cut);
        the estimator adds the collapse and affine-correction details.
    """

    labels: np.ndarray
    kept: tuple
    rejected: dict
    cut_height: float
    cut_index: int
    linkage: np.ndarray
    median_angle: dict
    min_size: int
    metric: str
    sign_invariant: bool
    features: np.ndarray
    gamma: float
    beta: float
    n_students: int
    info: dict = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return len(self.kept)

    def members(self, cluster: int) -> np.ndarray:
        """Row indices of the neurons in ``cluster``."""
        return np.flatnonzero(self.labels == cluster)

    def distances(self) -> np.ndarray:
        """The condensed distance vector the linkage was computed from."""
        return pairwise_distances(self.features, self.metric, self.sign_invariant)


def cluster_neurons(
    features: Array,
    weights: Array,
    n_students: int,
    gamma: float,
    beta: float,
    metric: str = "euclidean",
    sign_invariant: bool = False,
    cut: str = "aligned",
    groups: Array | None = None,
    lowest: bool = False,
) -> LayerClusters:
    """Average-linkage clustering, the gamma cut and the beta alignment filter.

    Parameters
    ----------
    features : ndarray, shape (n, k)
        Vectors to cluster (``[w; b]`` per neuron).
    weights : ndarray, shape (n, d)
        Input weight vectors whose within-cluster angles decide alignment. Without the
        bias: near-constant neurons (``w ~ 0``) have features all pointing along the bias
        axis but input weights in random directions, so this filter removes them.
    n_students : int
        N, for the size threshold ``ceil(gamma N)``.
    gamma : float in (0, 1]
    beta : float
        Maximal median within-cluster angle in radians.
    metric, sign_invariant
        See :func:`pairwise_distances`.
    cut : {"aligned", "size"}
        ``"size"``: the paper's cut, maximising the number of clusters of at least
        ``ceil(gamma N)`` neurons; the beta filter then drops the unaligned ones.
        ``"aligned"`` (default): maximise the number of clusters that are big *and* pass
        the beta filter, i.e. the number of clusters finally kept. With many distractor
        neurons (wide students, low input dimension, the bounded cosine distance of
        relu-like activations) the size count peaks where distractors form big clusters
        of their own, by which height the true clusters have absorbed so many
        distractors that they fail the beta filter; counting only aligned clusters picks
        the height at which the true clusters are complete and still clean. When no node
        is aligned at all, the size cut is used (so the report shows the big clusters).
    groups : ndarray of int, shape (n,), optional
        Student of each neuron. Then a cluster's size is its number of distinct students
        (:func:`node_support`); without, its number of neurons (the paper's definition,
        the same when no student holds two members of one cluster).
    lowest : bool
        Cut at the lowest height where the count is maximal (:func:`choose_cut`), for
        ``gamma = 1`` over a group of students that must each hold every true neuron.

    Returns
    -------
    LayerClusters
        Kept clusters ordered by their first member (so by the first student's neurons).
    """
    features = np.asarray(features, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    n = len(features)
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weight vectors for {n} feature vectors")
    if not 0 < beta <= math.pi:
        raise ValueError(f"beta={beta!r}; allowed: 0 < beta <= pi")
    if cut not in ("aligned", "size"):
        raise ValueError(f"cut={cut!r}; allowed: aligned, size")
    min_size = min_cluster_size(gamma, n_students)
    if n < 2:
        raise ValueError(f"need at least 2 neurons to cluster, got {n}")
    Z = average_linkage(pairwise_distances(features, metric, sign_invariant))
    counts = big_cluster_counts(Z, min_size, groups)
    if cut == "aligned":
        aligned = cluster_counts(Z, aligned_nodes(Z, weights, min_size, beta, sign_invariant, groups))
        counts = aligned if aligned.max() > 0 else counts
    k, height = choose_cut(Z, counts, lowest)
    labels = labels_after(Z, k)
    kept, rejected, medians = [], {}, {}
    for c in range(int(labels.max()) + 1):
        rows = labels == c
        support = rows.sum() if groups is None else len(np.unique(np.asarray(groups)[rows]))
        if support < min_size:
            rejected[c] = "small"
            continue
        medians[c] = median_angle(weights[rows], sign_invariant)
        if medians[c] > beta:
            rejected[c] = "unaligned"
        else:
            kept.append(c)
    labels, kept, merged = merge_split_clusters(features, labels, kept, beta, metric, sign_invariant)
    return LayerClusters(
        labels=labels,
        kept=tuple(kept),
        rejected=rejected,
        cut_height=height,
        cut_index=k,
        linkage=Z,
        median_angle=medians,
        min_size=min_size,
        metric=metric,
        sign_invariant=sign_invariant,
        features=features,
        gamma=float(gamma),
        beta=float(beta),
        n_students=int(n_students),
        info={"merged": merged, "n_big": len(medians), "cut": cut},
    )


def medoid_index(F: Array, metric: str, sign_invariant: bool) -> int:
    """Row of ``F`` with the smallest summed distance to the other rows."""
    if len(F) == 1:
        return 0
    return int(np.argmin(squareform(pairwise_distances(F, metric, sign_invariant)).sum(axis=1)))


def same_neuron(u: Array, v: Array, beta: float, metric: str, sign_invariant: bool) -> bool:
    """Whether two feature vectors describe the same neuron at tolerance ``beta``.

    Cosine metric: their angle is at most ``beta``. Euclidean metric: their distance is
    at most the chord of angle ``beta`` on the larger vector's sphere,
    ``2 sin(beta / 2) max(|u|, |v|)``, so both the direction and the scale must agree.
    """
    if metric == "cosine":
        return float(pairwise_distances(np.vstack([u, v]), metric, sign_invariant)[0]) <= 1.0 - math.cos(beta)
    d = float(pairwise_distances(np.vstack([u, v]), metric, sign_invariant)[0])
    return d <= 2.0 * math.sin(beta / 2.0) * max(np.linalg.norm(u), np.linalg.norm(v))


def merge_split_clusters(features, labels, kept, beta, metric, sign_invariant):
    """Re-unite kept clusters whose medoids are the same neuron (:func:`same_neuron`).

    When most students carry two or more duplicates of a teacher neuron, its cluster holds
    up to 2N neurons and can split into two halves of at least ``gamma N`` each; the cut
    that maximises the number of big clusters then prefers the split. Merging the halves
    back (transitively) undoes that without affecting clusters of distinct neurons.

    Returns
    -------
    labels : ndarray
        Members of a merged cluster take the label of its first (lowest) cluster.
    kept : tuple
    merged : list of list of int
        Groups of clusters merged (only groups of two or more).
    """
    medoids = {}
    for c in kept:
        F = features[labels == c]
        medoids[c] = F[medoid_index(F, metric, sign_invariant)]
    root = {c: c for c in kept}

    def find(c):
        while root[c] != c:
            c = root[c]
        return c

    for i, a in enumerate(kept):
        for b_ in kept[i + 1:]:
            if find(a) != find(b_) and same_neuron(medoids[a], medoids[b_], beta, metric, sign_invariant):
                root[find(b_)] = find(a)
    labels = labels.copy()
    groups: dict[int, list[int]] = {}
    for c in kept:
        groups.setdefault(find(c), []).append(c)
        labels[labels == c] = find(c)
    return labels, tuple(groups), [g for g in groups.values() if len(g) > 1]
