"""How well a reconstructed network matches its teacher (paper Fig. 5, Table A.3).

- :func:`rmse`: root mean squared error over all samples and outputs.
- :func:`match_neurons`: Hungarian assignment of reconstructed to teacher hidden neurons
  on the angle between their ``[w; b]`` vectors, up to the activation's symmetry (the
  sign for odd and even+linear classes; for positive-scaling classes every neuron is
  first normalised to ``||[w; b]|| = 1`` with the norm moved into its output weights),
  with per-neuron cosine distance, weight-vector and output-weight distances.
- :func:`compare_networks`: those per-neuron rows and their summary (m_hat / r, excess
  and missing neurons, mean / max distances, test RMSE).
- :func:`compare_layers`: the same layer by layer for deep networks, and
  :func:`pooled_distances` its one-number summaries.

The bias is part of the compared vector because A.4 teachers may hold two neurons with the
same input weights and different biases.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from .activations import get_activation
from .cluster import Layer, flip_rule, normalise_scale
from .mlp import MLPSpec

Array = np.ndarray
# Matching teacher neurons layer by layer: an excess neuron this close (degrees) to a teacher
# neuron is one of its duplicates, and its outgoing weights count for that teacher neuron.
DUPLICATE_DEG = 1.0


def rmse(y_pred: Array, y_true: Array) -> float:
    """Root of the mean (over samples and outputs) squared error."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    r = y_pred - np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
    return float(math.sqrt(np.mean(r * r)))


def _first_layer(spec: MLPSpec, theta: Array) -> Layer:
    layers = spec.unpack(theta)
    (W, b), (A, c) = layers[0], layers[1]
    return Layer(W, b, A, c, np.zeros((A.shape[0], W.shape[1])))


def match_neurons(rec: Layer, teacher: Layer, activation) -> tuple[list[dict], list[int], list[int]]:
    """Match reconstructed to teacher neurons of one hidden layer.

    Parameters
    ----------
    rec, teacher : Layer
        Hidden layer with outgoing weights (``W`` (m, d), ``b`` (m,), ``A`` (d_out, m)).
    activation : str or Activation

    Returns
    -------
    rows : list of dict
        One per matched pair, ordered by teacher neuron: ``teacher``, ``reconstructed``,
        ``flipped`` (matched with the opposite sign), ``angle_deg``, ``cos_dist``
        (``1 - |cos|`` for sign-symmetric activations, else ``1 - cos``), ``w_dist``
        (L2 distance of the aligned ``[w; b]``), ``a_dist`` (L2 distance of the aligned
        output weights), ``a_teacher`` (L2 norm of the teacher's output weights).
    excess : list of int
        Reconstructed neurons left without a teacher neuron.
    missing : list of int
        Teacher neurons left without a reconstructed neuron.
    """
    act = get_activation(activation)
    if act.positive_scaling:
        rec, teacher = normalise_scale(rec), normalise_scale(teacher)
    V = np.hstack([rec.W, rec.b[:, None]])
    T = np.hstack([teacher.W, teacher.b[:, None]])
    nv, nt = np.linalg.norm(V, axis=1), np.linalg.norm(T, axis=1)
    denom = np.outer(nv, nt)
    cos = np.clip((V @ T.T) / np.where(denom > 0, denom, 1.0), -1.0, 1.0)
    sym = act.sign_symmetric
    angle = np.arccos(np.abs(cos) if sym else cos)
    ri, ti = linear_sum_assignment(angle)
    s = flip_rule(act).s if sym else 1.0
    rows = []
    for i, j in sorted(zip(ri, ti), key=lambda p: p[1]):
        flipped = bool(sym and cos[i, j] < 0)
        sign = -1.0 if flipped else 1.0
        a = rec.A[:, i] * (s if flipped else 1.0)
        rows.append({
            "teacher": int(j),
            "reconstructed": int(i),
            "flipped": flipped,
            "angle_deg": float(np.degrees(_angle(sign * V[i], T[j]))),
            "cos_dist": float(1.0 - (abs(cos[i, j]) if sym else cos[i, j])),
            "w_dist": float(np.linalg.norm(sign * V[i] - T[j])),
            "a_dist": float(np.linalg.norm(a - teacher.A[:, j])),
            "a_teacher": float(np.linalg.norm(teacher.A[:, j])),
        })
    excess = sorted(set(range(len(V))) - set(ri.tolist()))
    missing = sorted(set(range(len(T))) - set(ti.tolist()))
    return rows, excess, missing


def _angle(u: Array, v: Array) -> float:
    """Angle between two vectors, accurate also when tiny (``arccos`` of a cosine near 1
    cannot resolve angles below ~1e-8 rad)."""
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return math.pi / 2
    u, v = u / nu, v / nv
    return 2.0 * math.atan2(np.linalg.norm(u - v), np.linalg.norm(u + v))


def compare_networks(
    spec: MLPSpec,
    theta: Array,
    teacher_spec: MLPSpec,
    teacher_theta: Array,
    X_test: Array | None = None,
    y_test: Array | None = None,
) -> tuple[dict, list[dict]]:
    """Summary and per-neuron rows comparing a reconstruction with its teacher.

    Parameters
    ----------
    spec, theta : MLPSpec, ndarray
        The reconstructed network.
    teacher_spec, teacher_theta : MLPSpec, ndarray
    X_test, y_test : ndarray, optional
        Held-out inputs and teacher outputs for the test RMSE.

    Returns
    -------
    summary : dict
        ``r``, ``m_hat``, ``m_hat_over_r``, ``excess``, ``missing``, ``n_flipped``,
        ``mean_cos_dist`` / ``max_cos_dist``, ``mean_angle_deg`` / ``max_angle_deg``,
        ``mean_w_dist`` / ``max_w_dist``, ``mean_a_dist`` / ``max_a_dist`` (over matched
        pairs) and, with test data, ``test_rmse``.
    rows : list of dict
        Per matched neuron, see :func:`match_neurons`.
    """
    if spec.d_in != teacher_spec.d_in or spec.d_out != teacher_spec.d_out:
        raise ValueError(f"layer sizes {spec.layer_sizes} and {teacher_spec.layer_sizes} disagree on inputs/outputs")
    rows, excess, missing = match_neurons(
        _first_layer(spec, theta), _first_layer(teacher_spec, teacher_theta), spec.activation
    )
    r, m_hat = teacher_spec.hidden_sizes[0], spec.hidden_sizes[0]
    summary = {"r": int(r), "m_hat": int(m_hat), "m_hat_over_r": m_hat / r, "excess": len(excess),
               "missing": len(missing), "n_flipped": sum(row["flipped"] for row in rows)}
    for key in ("cos_dist", "angle_deg", "w_dist", "a_dist"):
        vals = [row[key] for row in rows]
        summary[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
        summary[f"max_{key}"] = float(np.max(vals)) if vals else math.nan
    if X_test is not None and y_test is not None:
        summary["test_rmse"] = rmse(spec.forward(theta, X_test), y_test)
    return summary, rows


def compare_layers(spec: MLPSpec, theta: Array, teacher_spec: MLPSpec, teacher_theta: Array,
                   X_test: Array | None = None, y_test: Array | None = None) -> tuple[dict, list[dict]]:
    """Layer-by-layer comparison of a deep reconstruction with its teacher.

    Layer ``l`` of the reconstruction is compared in the teacher's coordinates: its input
    weights are mapped through the neuron matching of layer ``l - 1`` (matched neurons, and
    excess neurons within ``DUPLICATE_DEG`` of a teacher neuron as its duplicates; sign
    flips of odd activations included), then matched with :func:`ec.metrics.match_neurons`.

    Returns
    -------
    summary : dict
        ``r``, ``m_hat``, ``excess``, ``missing``: lists with one entry per hidden layer;
        ``layers``: per hidden layer ``r``, ``m_hat``, ``excess``, ``missing``,
        ``mean_angle_deg``, ``max_angle_deg``, ``mean_cos_dist``, ``max_cos_dist``; with
        test data ``test_rmse``.
    rows : list of dict
        The rows of :func:`ec.metrics.match_neurons` of every layer, with ``layer`` (0-based
        hidden layer); ``a_dist`` is meaningful only in the last hidden layer.
    """
    if spec.d_in != teacher_spec.d_in or spec.d_out != teacher_spec.d_out or spec.n_layers != teacher_spec.n_layers:
        raise ValueError(f"layer sizes {spec.layer_sizes} and {teacher_spec.layer_sizes} are not comparable")
    act = get_activation(spec.activation)
    rule = flip_rule(act)
    rec, tea = spec.unpack(theta), teacher_spec.unpack(teacher_theta)
    P = np.eye(spec.d_in)  # reconstructed inputs of the current layer -> teacher inputs
    layers, all_rows = [], []
    for l in range(spec.n_layers - 1):
        (W, b), (A, c) = rec[l], rec[l + 1]
        (Wt, bt), (At, ct) = tea[l], tea[l + 1]
        last = l == spec.n_layers - 2
        r_layer = Layer(W @ P, b, A if last else np.zeros((1, len(b))), c, np.zeros((1, 1)))
        t_layer = Layer(Wt, bt, At if last else np.zeros((1, len(bt))), ct, np.zeros((1, 1)))
        rows, excess, missing = match_neurons(r_layer, t_layer, act)
        P = np.zeros((len(b), len(bt)))
        for row in rows:
            P[row["reconstructed"], row["teacher"]] = rule.s if row["flipped"] else 1.0
        if excess:
            dup_rows, _, _ = match_neurons(_subset(r_layer, excess), t_layer, act)
            for row in dup_rows:
                if row["angle_deg"] <= DUPLICATE_DEG:
                    P[excess[row["reconstructed"]], row["teacher"]] = rule.s if row["flipped"] else 1.0
        stats = {"r": len(bt), "m_hat": len(b), "excess": len(excess), "missing": len(missing)}
        for key in ("angle_deg", "cos_dist"):
            vals = [row[key] for row in rows]
            stats[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
            stats[f"max_{key}"] = float(np.max(vals)) if vals else math.nan
        layers.append(stats)
        all_rows += [{"layer": l, **row} for row in rows]
    summary = {key: [L[key] for L in layers] for key in ("r", "m_hat", "excess", "missing")}
    summary["layers"] = layers
    if X_test is not None and y_test is not None:
        summary["test_rmse"] = rmse(spec.forward(theta, X_test), y_test)
    return summary, all_rows


def pooled_distances(rows: Sequence[dict]) -> dict:
    """Mean / max ``cos_dist`` and ``angle_deg`` over the matched neurons of every layer (rows
    of :func:`compare_layers`), and of ``a_dist`` over the last hidden layer's, where the
    output weights are comparable: the one-number summaries of a deep comparison."""
    last = max((row["layer"] for row in rows), default=0)
    out = {}
    for key, group in (("cos_dist", rows), ("angle_deg", rows), ("a_dist", [r for r in rows if r["layer"] == last])):
        vals = [row[key] for row in group]
        out[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
        out[f"max_{key}"] = float(np.max(vals)) if vals else math.nan
    return out


def _subset(layer: Layer, idx: Sequence[int]) -> Layer:
    idx = np.asarray(idx)
    return Layer(layer.W[idx], layer.b[idx], layer.A[:, idx], layer.c, layer.Theta)


def compare(spec: MLPSpec, theta: Array, teacher_spec: MLPSpec, teacher_theta: Array,
            X_test: Array | None = None, y_test: Array | None = None) -> tuple[dict, list[dict]]:
    """:func:`compare_networks` for one hidden layer, :func:`compare_layers` for several (the
    teacher's depth decides)."""
    if teacher_spec.n_layers > 2:
        return compare_layers(spec, theta, teacher_spec, teacher_theta, X_test, y_test)
    return compare_networks(spec, theta, teacher_spec, teacher_theta, X_test, y_test)


def parameter_error(spec: MLPSpec, theta: Array, teacher_spec: MLPSpec, teacher_theta: Array) -> float:
    """Largest absolute difference between corresponding parameters once the reconstruction
    is mapped onto the teacher by the symmetries that keep the function.

    Layer by layer: for positive-scaling activations every hidden neuron of both networks
    is first normalised to ``||[w; b]|| = 1`` with its norm moved into the next layer; then
    the reconstructed neurons are permuted onto the teacher's (Hungarian assignment on the
    angle of ``[w; b]``) and, for odd activations (``sigma(z) = s sigma(-z) + q``), flipped
    where that aligns them, the next layer absorbing the flip (its column times ``s``, ``q``
    times the column into its bias). Even+linear activations (relu, gelu, softplus) have no
    flip without a skip connection, so an opposite neuron counts as wrong.

    Returns
    -------
    float
        ``inf`` when the layer sizes differ.
    """
    if spec.layer_sizes != teacher_spec.layer_sizes:
        return math.inf
    act = get_activation(spec.activation)
    rule = flip_rule(act) if act.sign_symmetric and not act.even_linear else None
    rec = [(W.copy(), b.copy()) for W, b in spec.unpack(theta)]
    tea = [(W.copy(), b.copy()) for W, b in teacher_spec.unpack(teacher_theta)]
    for l in range(spec.n_layers - 1):
        if act.positive_scaling:
            for net in (rec, tea):
                (W, b), (A, c) = net[l], net[l + 1]
                norm = np.sqrt(np.einsum("ij,ij->i", W, W) + b**2)
                norm = np.where(norm > 0, norm, 1.0)
                net[l], net[l + 1] = (W / norm[:, None], b / norm), (A * norm, c)
        V = np.hstack([rec[l][0], rec[l][1][:, None]])
        T = np.hstack([tea[l][0], tea[l][1][:, None]])
        cos = (V @ T.T) / np.maximum(np.outer(np.linalg.norm(V, axis=1), np.linalg.norm(T, axis=1)), 1e-300)
        cos = np.clip(cos, -1.0, 1.0)
        ri, ti = linear_sum_assignment(-np.abs(cos) if rule is not None else -cos)
        order = ri[np.argsort(ti)]
        (W, b), (A, c) = rec[l], rec[l + 1]
        W, b, A = W[order], b[order], A[:, order]
        if rule is not None:
            flip = cos[order, np.arange(len(order))] < 0
            c = c + rule.q * A[:, flip].sum(axis=1)
            W[flip], b[flip] = -W[flip], -b[flip]
            A[:, flip] *= rule.s
        rec[l], rec[l + 1] = (W, b), (A, c)
    return float(max(max(np.max(np.abs(Wr - Wt)), np.max(np.abs(br - bt)))
                     for (Wr, br), (Wt, bt) in zip(rec, tea)))


def output_error_bits(y_pred: Array, y_true: Array) -> float:
    """Agreement of two networks' outputs in bits: ``-log2`` of the largest absolute output
    difference relative to the largest absolute true output over the same inputs (the
    cryptanalytic extraction literature's measure); ``inf`` when they agree exactly."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.float64).reshape(y_pred.shape)
    scale = max(float(np.max(np.abs(y_true))), np.finfo(np.float64).tiny)
    err = float(np.max(np.abs(y_pred - y_true))) / scale
    return math.inf if err == 0 else -math.log2(err)
