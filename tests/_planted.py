"""Planted students for clustering tests: teacher neurons duplicated with small noise
(mirrored / rescaled where the activation's symmetry allows it) plus zero-type,
constant-type and random distractors. Imported by tests/test_cluster.py and
tests/test_reconstruct.py."""

from __future__ import annotations

import numpy as np

from ec.activations import get_activation
from ec.cluster import flip_rule
from ec.mlp import MLPSpec
from ec.teachers import make_teacher
from ec.train import TrainResult


def planted_students(act: str, d: int = 4, r: int = 4, m: int = 16, n_students: int = 10, noise: float = 1e-6,
                     seed: int = 0, two_duplicates: bool = False):
    """Return ``(teacher, students, truth)``.

    ``truth[i]`` maps each neuron index of student ``i`` to the teacher neuron it duplicates
    (or -1 for a distractor). Each student holds every teacher neuron once or twice (the
    outgoing weight split between the copies), mirrored with a random sign for odd
    activations (exact compensation: the function is the teacher's) and rescaled by a
    random positive factor for positive-scaling activations. Distractors: a zero-type pair
    (same random vector, outgoing weights a and -a), constant-type neurons (w ~ 1e-3 noise)
    and random neurons with zero outgoing weight.
    """
    teacher = make_teacher((d, r, 1), seed, act)
    (Wt, bt), (At, ct) = teacher.spec.unpack(teacher.params)
    info = get_activation(act)
    rule = flip_rule(act)
    rng = np.random.default_rng(seed + 1)
    spec = MLPSpec((d, m, 1), act)
    students, truth = [], []
    for s in range(n_students):
        copies = np.full(r, 2) if two_duplicates else rng.integers(1, 3, size=r)
        rows, owner = [], []
        c = ct.copy()
        for k in range(r):
            parts = rng.dirichlet(np.ones(copies[k])) if copies[k] > 1 else np.ones(1)
            for frac in parts:
                w = Wt[k] + noise * rng.normal(size=d)
                b = bt[k] + noise * rng.normal()
                a = At[0, k] * frac
                if info.positive_scaling:
                    scale = rng.uniform(0.5, 2.0)
                    w, b, a = w * scale, b * scale, a / scale
                if rule is not None and rule.p == 0.0 and rng.random() < 0.5:
                    # odd classes: sigma(z) = -sigma(-z) + q, exactly compensated in the bias
                    c = c + a * rule.q
                    w, b, a = -w, -b, rule.s * a
                rows.append((w, b, a))
                owner.append(k)
        v, bv = rng.normal(size=d), rng.normal()
        rows += [(v, bv, 0.7), (v.copy(), bv, -0.7)]  # zero-type pair
        owner += [-1, -1]
        while len(rows) < m:
            if len(rows) % 2:
                rows.append((1e-3 * rng.normal(size=d), rng.normal(), rng.normal()))  # constant type
            else:
                rows.append((rng.normal(size=d) * 2, rng.normal(), 0.0))  # random, no output
            owner.append(-1)
        if len(rows) != m:
            raise ValueError(f"width {m} too small for {len(rows)} planted neurons")
        perm = rng.permutation(m)
        W = np.array([rows[p][0] for p in perm])
        b = np.array([rows[p][1] for p in perm])
        A = np.array([[rows[p][2] for p in perm]])
        theta = spec.pack([(W, b), (A, c)])
        students.append(TrainResult(spec, theta, float(10.0 ** -(20 + s % 7)), 0.0, "min_loss", seed=s))
        truth.append(np.array([owner[p] for p in perm]))
    return teacher, students, truth
