"""Clustering of student neurons: distances, linkage cut, planted clusters, symmetries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _planted import planted_students
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from ec.activations import HIDDEN_ACTIVATIONS, get_activation
from ec.cluster import (
    fit_affine,
    best_flips,
    Layer,
    NeuronTable,
    big_cluster_counts,
    canonicalise,
    choose_cut,
    cluster_layer,
    cluster_neurons,
    collapse,
    correct_affine,
    flip,
    flip_rule,
    labels_after,
    min_cluster_size,
    pairwise_distances,
    prune_inactive,
)
from ec.queries import uniform_inputs
from ec.teachers import make_teacher

BETA = math.pi / 24


def _same_partition(a, b) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b)}
    return len(pairs) == len(set(a)) == len(set(b))


def _random_layer(d=3, m=6, d_out=2, seed=0) -> Layer:
    rng = np.random.default_rng(seed)
    return Layer(rng.normal(size=(m, d)), rng.normal(size=m), rng.normal(size=(d_out, m)), rng.normal(size=d_out),
                 np.zeros((d_out, d)))


# -- distances and the dendrogram cut -------------------------------------------------------


def test_distances_match_scipy_and_brute_force():
    F = np.random.default_rng(1).normal(size=(30, 5))
    np.testing.assert_allclose(pairwise_distances(F, "euclidean", False), pdist(F), rtol=0, atol=0)
    brute = [min(np.linalg.norm(u - v), np.linalg.norm(u + v)) for i, u in enumerate(F) for v in F[i + 1:]]
    np.testing.assert_allclose(pairwise_distances(F, "euclidean", True), brute, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pairwise_distances(F, "cosine", False), pdist(F, "cosine"), atol=1e-12)
    np.testing.assert_allclose(pairwise_distances(F, "cosine", True), 1 - np.abs(1 - pdist(F, "cosine")), atol=1e-12)
    # mirrored copies are at distance 0 up to sign
    G = np.vstack([F[:3], -F[:3]])
    D = pairwise_distances(G, "euclidean", True)
    assert np.allclose(D[[2, 7, 11]], 0.0)  # pairs (0,3), (1,4), (2,5)


def test_big_cluster_counts_and_labels_match_fcluster():
    rng = np.random.default_rng(2)
    F = np.vstack([c + 0.05 * rng.normal(size=(12, 3)) for c in rng.normal(size=(4, 3)) * 3])
    Z = linkage(pdist(F), "average")
    for min_size in (2, 5, 10):
        counts = big_cluster_counts(Z, min_size)
        for k in range(len(Z)):
            flat = fcluster(Z, Z[k, 2], "distance")  # heights are distinct: exactly merges 0..k
            assert counts[k] == (np.bincount(flat) >= min_size).sum()
            assert _same_partition(labels_after(Z, k), flat)


def test_support_counts_distinct_students():
    rng = np.random.default_rng(5)
    F = np.vstack([c + 0.05 * rng.normal(size=(12, 3)) for c in rng.normal(size=(4, 3)) * 3])
    groups = rng.integers(0, 5, size=len(F))
    Z = linkage(pdist(F), "average")
    counts = big_cluster_counts(Z, 4, groups)
    for k in range(len(Z)):
        flat = fcluster(Z, Z[k, 2], "distance")
        assert counts[k] == sum(len(set(groups[flat == c])) >= 4 for c in set(flat))
    # a zero-type pair inside one student is not a cluster of two students
    pair = np.array([[1.0, 2.0], [1.0, 2.0], [5.0, 5.0]])
    Z = linkage(pdist(pair), "average")
    assert big_cluster_counts(Z, 2, np.array([0, 0, 1]))[0] == 0
    assert big_cluster_counts(Z, 2)[0] == 1
    res = cluster_neurons(pair, pair, n_students=2, gamma=1.0, beta=BETA, groups=np.array([0, 0, 1]))
    assert res.n_kept == 0


def test_choose_cut_tie_break_is_the_top_of_the_first_maximal_run():
    rng = np.random.default_rng(3)
    F = np.vstack([c + 0.01 * rng.normal(size=(10, 2)) for c in ([0, 0], [5, 0], [0, 5])]
                  + [rng.uniform(-20, 20, size=(6, 2))])
    Z = linkage(pdist(F), "average")
    counts = big_cluster_counts(Z, 8)
    k, h = choose_cut(Z, counts)
    best = counts.max()
    assert counts[k] == best == 3
    first = int(np.argmax(counts == best))
    assert np.all(counts[first:k + 1] == best) and (k + 1 == len(counts) or counts[k + 1] != best)
    assert Z[k, 2] < h < Z[k + 1, 2]
    assert _same_partition(labels_after(Z, k), fcluster(Z, h, "distance"))


def test_min_cluster_size():
    assert min_cluster_size(0.8, 20) == 16
    assert min_cluster_size(0.8, 10) == 8
    assert min_cluster_size(1.0, 3) == 3
    with pytest.raises(ValueError, match="gamma"):
        min_cluster_size(0.1, 5)
    with pytest.raises(ValueError, match="gamma"):
        min_cluster_size(0.0, 5)


# -- planted students ------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["g", "tanh", "sigmoid", "relu", "softplus", "gelu"])
@pytest.mark.parametrize("two_duplicates", [False, True])
def test_planted_clusters_recovered_exactly(act, two_duplicates):
    teacher, students, truth = planted_students(act, two_duplicates=two_duplicates)
    table = NeuronTable.from_students(students)
    clusters = cluster_layer(table, act, 0.8, BETA)
    owner = np.concatenate(truth)
    assert clusters.n_kept == teacher.spec.hidden_sizes[0]
    found = set()
    for c in clusters.kept:
        members = owner[clusters.members(c)]
        teachers = set(members[members >= 0].tolist())
        # one teacher neuron per cluster, all its duplicates in it; distractors may join
        # (for the cosine metric in 5 dimensions everything joins some big cluster) but stay
        # a minority, so the median angle still passes the beta filter
        assert len(teachers) == 1, f"cluster {c} mixes teacher neurons {teachers}"
        k = teachers.pop()
        assert (members == k).sum() == (owner == k).sum()
        assert (members == k).mean() > 0.5
        found.add(k)
    assert found == set(range(teacher.spec.hidden_sizes[0]))

    layer, info = collapse(table, clusters, act)
    best = int(np.argmin([s.loss for s in students]))
    assert [i["winner"] for i in info] == [best] * len(info)
    rec = canonicalise(layer, act)
    (Wt, bt), (At, _) = teacher.spec.unpack(teacher.params)
    ref = canonicalise(Layer(Wt, bt, At, np.zeros(1), np.zeros((1, Wt.shape[1]))), act)
    order = [int(np.argmin(np.linalg.norm(ref.W - w, axis=1))) for w in rec.W]
    assert sorted(order) == list(range(len(order)))
    np.testing.assert_allclose(rec.W, ref.W[order], atol=1e-5)
    np.testing.assert_allclose(rec.b, ref.b[order], atol=1e-5)
    np.testing.assert_allclose(rec.A, ref.A[:, order], atol=1e-5)


def test_planted_function_recovered_after_affine_correction():
    teacher, students, _ = planted_students("tanh", noise=0.0)
    table = NeuronTable.from_students(students)
    layer, _ = collapse(table, cluster_layer(table, "tanh", 0.8, BETA), "tanh")
    X = uniform_inputs(500, 4, 7)
    layer, info = correct_affine(layer, X, teacher.predict(X), "tanh")
    np.testing.assert_allclose(layer(X, "tanh"), teacher.predict(X), atol=1e-12)


def test_unaligned_and_small_clusters_rejected():
    rng = np.random.default_rng(4)
    good = np.array([3.0, -1.0, 2.0]) + 1e-6 * rng.normal(size=(10, 3))
    near_constant = np.hstack([1e-3 * rng.normal(size=(10, 2)), np.full((10, 1), 1.5)])  # w ~ 0, same bias
    F = np.vstack([good, near_constant, rng.normal(size=(3, 3)) * 10])
    res = cluster_neurons(F, F[:, :2], n_students=10, gamma=0.8, beta=BETA)
    assert res.n_kept == 1 and set(res.members(res.kept[0])) == set(range(10))
    reasons = sorted(res.rejected.values())
    assert "unaligned" in reasons and "small" in reasons


# -- symmetries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "act,rule",
    [("tanh", (-1, 0, 0)), ("sigmoid", (-1, 0, 1)), ("relu", (1, 1, 0)), ("leaky_relu", (1, 1.01, 0)),
     ("softplus", (1, 1, 0)), ("gelu", (1, 1, 0)), ("silu", (1, 1, 0))],
)
def test_flip_rule(act, rule):
    got = flip_rule(act)
    np.testing.assert_allclose((got.s, got.p, got.q), rule, atol=1e-12)


def test_no_flip_rule_without_symmetry():
    assert flip_rule("g") is None and flip_rule("selu") is None
    with pytest.raises(ValueError, match="no sign symmetry"):
        flip(_random_layer(), np.ones(6, dtype=bool), "g")


@pytest.mark.parametrize("act", HIDDEN_ACTIVATIONS)
def test_canonicalise_preserves_the_network_function(act):
    layer = _random_layer(seed=5)
    X = np.random.default_rng(6).normal(size=(200, 3)) * 2
    can = canonicalise(layer, act)
    np.testing.assert_allclose(can(X, act), layer(X, act), rtol=1e-12, atol=1e-12)
    info = get_activation(act)
    if info.sign_symmetric:
        from ec.cluster._canonical import reference_direction

        assert np.all(np.hstack([can.W, can.b[:, None]]) @ reference_direction(4) > 0)
    if info.positive_scaling:
        np.testing.assert_allclose(np.linalg.norm(np.hstack([can.W, can.b[:, None]]), axis=1), 1.0)
    if not info.even_linear:
        assert np.all(can.Theta == 0)  # odd classes and none: an exact network, no skip


@pytest.mark.parametrize("act", ["relu", "softplus", "leaky_relu", "gelu"])
def test_affine_correction_is_exact_for_even_linear(act):
    teacher = make_teacher((3, 5, 2), 11, act)
    (W, b), (A, c) = teacher.spec.unpack(teacher.params)
    layer = Layer(W, b, A, c, np.zeros((2, 3)))
    mirrored = flip(layer, np.array([True, False, True, True, False]), act)
    X = uniform_inputs(1000, 3, 12)
    y = teacher.predict(X)
    np.testing.assert_allclose(mirrored(X, act), y, atol=1e-12)  # with its skip, the same function
    assert np.linalg.norm(mirrored.Theta) > 0.1
    # Without the skip and the bias the plain network is wrong; the correction makes it exact.
    plain = Layer(mirrored.W, mirrored.b, mirrored.A, np.zeros(2), np.zeros((2, 3)))
    fixed, info = correct_affine(plain, X, y, act)
    assert info["skip_norm_before"] > 0.1 and info["skip_norm_after"] < 1e-10
    np.testing.assert_allclose(fixed(X, act), y, atol=1e-10)
    np.testing.assert_allclose(fixed.W, W, atol=1e-12)  # back to the teacher's orientation


def test_affine_correction_keeps_flips_only_when_they_lower_the_loss():
    # inputs of very different scales (as pixels): the flip that best cancels the skip's
    # norm leaves a larger residual on the wide input, so it must be rejected
    X = np.random.default_rng(3).normal(size=(2000, 2)) * np.array([10.0, 0.01])
    layer = Layer(np.array([[0.3, 1.0]]), np.zeros(1), np.ones((1, 1)), np.zeros(1), np.zeros((1, 2)))
    y = layer(X, "relu") - X @ np.array([[0.1], [0.9]])  # a skip that no flip reproduces
    assert best_flips(Layer(layer.W, layer.b, layer.A, np.zeros(1), np.array([[-0.1, -0.9]])), "relu").any()
    fixed, info = correct_affine(layer, X, y, "relu")
    assert info["flipped"] == [] and np.array_equal(fixed.W, layer.W)
    mirrored = flip(layer, np.array([True]), "relu")
    mirrored = Layer(mirrored.W, mirrored.b, mirrored.A, mirrored.c, np.zeros((1, 2)))
    _, c = fit_affine(X, y - mirrored(X, "relu"), False)  # its best bias, without the skip

    def mse(net):
        return float(np.mean((net(X, "relu") - y) ** 2))

    assert mse(fixed) < mse(Layer(mirrored.W, mirrored.b, mirrored.A, c, mirrored.Theta))


def test_prune_inactive_folds_constant_neurons_into_the_bias():
    layer = _random_layer(seed=7)
    W = layer.W.copy()
    W[2] = 0.0  # constant type
    A = layer.A.copy()
    A[:, 4] = 0.0  # zero type
    layer = Layer(W, layer.b, A, layer.c, layer.Theta)
    X = np.random.default_rng(8).normal(size=(300, 3))
    pruned, removed = prune_inactive(layer, X, "tanh")
    assert removed == [2, 4] and len(pruned.b) == 4
    np.testing.assert_allclose(pruned(X, "tanh"), layer(X, "tanh"), atol=1e-12)


def test_dendrogram_title_counts_folded_clusters(tmp_path, monkeypatch):
    import dataclasses

    import ec.plots.synth as plots

    _, students, _ = planted_students("g")
    clusters = cluster_layer(NeuronTable.from_students(students), "g", 0.8, BETA)
    titles = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: titles.append(fig.axes[0].get_title()))
    plots.plot_dendrogram(clusters, tmp_path / "d.png")
    pruned = dataclasses.replace(clusters, info={**clusters.info, "pruned": [0, 2]})
    plots.plot_dendrogram(pruned, tmp_path / "d.png")
    assert titles[0].startswith(f"{clusters.n_kept} clusters kept (")
    assert titles[1].startswith(f"{clusters.n_kept} clusters kept, 2 of them folded into the bias (")
