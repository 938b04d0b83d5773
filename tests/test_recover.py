"""`ec recover`: loading what a user hands in, counting queries, Step 1 (the width search),
matching recovered weights to the model's, bad input, and recovery end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ec
from ec.activations import get_activation
from ec.cli import cli
from ec.metrics import output_error_bits, parameter_error
from ec.mlp import MLPSpec
from ec.reconstruct import _expansion, find_width
from ec.teachers.external import ModelError, QueryBudgetExceeded, from_callable, load_model, read_architecture
from ec.train import TrainResult


def _tanh_model(seed=0, sizes=(5, 3, 2)):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


# -- matching recovered weights to the model's ----------------------------------------------


def _symmetric_copy(spec: MLPSpec, theta, rng):
    """The same function with neurons permuted, odd neurons flipped and relu neurons rescaled."""
    act = get_activation(spec.activation)
    layers = [(W.copy(), b.copy()) for W, b in spec.unpack(theta)]
    for l in range(len(layers) - 1):
        (W, b), (A, c) = layers[l], layers[l + 1]
        p = rng.permutation(len(b))
        W, b, A = W[p], b[p], A[:, p]
        if act.positive_scaling:
            s = rng.uniform(0.3, 3.0, len(b))
            W, b, A = W * s[:, None], b * s, A / s
        if act.sign_symmetric and not act.even_linear:
            q = float(act.f(np.zeros(1))[0] * 2.0)  # sigma(z) = -sigma(-z) + q
            f = rng.random(len(b)) < 0.5
            c = c + q * A[:, f].sum(axis=1)
            W[f], b[f], A[:, f] = -W[f], -b[f], -A[:, f]
        layers[l], layers[l + 1] = (W, b), (A, c)
    return spec.pack(layers)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "g", "softplus"])
@pytest.mark.parametrize("sizes", [(5, 4, 2), (3, 4, 3, 1)])
def test_parameter_error_is_zero_up_to_the_symmetries_and_sees_a_perturbation(act, sizes):
    rng = np.random.default_rng(1)
    spec = MLPSpec(sizes, act)
    theta = rng.normal(size=spec.n_params)
    same = _symmetric_copy(spec, theta, rng)
    X = rng.normal(size=(50, sizes[0]))
    assert np.allclose(spec.forward(same, X), spec.forward(theta, X), atol=1e-12)
    assert parameter_error(spec, same, spec, theta) <= 1e-12
    bumped = theta.copy()
    bumped[0] += 1e-5
    assert 1e-6 < parameter_error(spec, bumped, spec, theta) < 1e-4


def test_parameter_error_of_other_widths_is_infinite_and_relu_opposites_differ():
    spec = MLPSpec((3, 2, 1), "relu")
    theta = np.random.default_rng(0).normal(size=spec.n_params)
    assert parameter_error(MLPSpec((3, 3, 1), "relu"), np.zeros(MLPSpec((3, 3, 1), "relu").n_params),
                           spec, theta) == math.inf
    (W, b), (A, c) = spec.unpack(theta)
    flipped = spec.pack([(-W, -b), (A, c)])  # relu has no flip symmetry: another function
    assert parameter_error(spec, flipped, spec, theta) > 0.1


def test_output_error_bits():
    y = np.array([[4.0], [-2.0]])
    assert output_error_bits(y, y) == math.inf
    assert output_error_bits(y + np.array([[0.0], [2.0**-20 * 4]]), y) == pytest.approx(20.0)


# -- loading models -----------------------------------------------------------------------


def test_torchscript_state_dict_and_pickle(tmp_path):
    model = _tanh_model()
    ts, sd, pk = tmp_path / "m.ts", tmp_path / "sd.pt", tmp_path / "m.pt"
    torch.jit.script(model).save(str(ts))
    torch.save(model.state_dict(), str(sd))
    torch.save(model, str(pk))
    X = np.random.default_rng(0).normal(size=(7, 5))
    with torch.no_grad():
        expected = model.double()(torch.from_numpy(X)).numpy()

    scripted = load_model(str(ts))
    assert scripted.kind == "torchscript" and scripted.spec.layer_sizes == (5, 3, 2)
    assert scripted.activation == "tanh" and scripted.d_in == 5
    assert np.allclose(scripted.query(X), expected, rtol=0, atol=1e-15) and scripted.queries == 7

    with pytest.raises(ModelError, match="--act"):
        load_model(str(sd))
    weights = load_model(str(sd), activation="tanh")
    assert np.allclose(weights.query(X), expected, rtol=0, atol=1e-14)

    with pytest.raises(ModelError, match="--allow-pickle"):
        load_model(str(pk))
    assert load_model(str(pk), allow_pickle=True).spec.layer_sizes == (5, 3, 2)


def test_modules_that_are_not_plain_chains_have_no_architecture():
    assert read_architecture(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)))[0] is None
    mixed = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2), torch.nn.Tanh(),
                                torch.nn.Linear(2, 1))
    assert read_architecture(mixed)[0] is None
    approx = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(2, 1))
    assert read_architecture(approx)[0] is None


def test_query_pair_files(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    np.savez(tmp_path / "p.npz", X=X, y=y)
    pairs = load_model(str(tmp_path / "p.npz"))
    assert pairs.kind == "pairs" and pairs.d_in == 3 and pairs.d_out == 1
    (tmp_path / "p.csv").write_text("a,b,c,y\n" + "\n".join(",".join(map(str, [*x, t])) for x, t in zip(X, y)))
    assert np.allclose(load_model(str(tmp_path / "p.csv")).pairs[1][:, 0], y)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ModelError, match="output columns"):
        load_model(str(tmp_path / "bad.csv"))
    np.savez(tmp_path / "q.npz", inputs=X)
    with pytest.raises(ModelError, match="X and y"):
        load_model(str(tmp_path / "q.npz"))


def test_callables_wrong_shapes_nan_and_the_query_budget(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(
        "import numpy as np\n"
        "def good(X):\n    return np.tanh(X @ np.ones((X.shape[1], 2)))\n"
        "def flat(X):\n    return X.ravel()\n"
        "def nan(X):\n    return np.full((len(X), 1), np.nan)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="--din"):
        load_model("user_nets:good")
    model = load_model("user_nets:good", d_in=4)
    model.max_queries = 10
    assert model.query(np.zeros((6, 4))).shape == (6, 2) and model.d_out == 2
    with pytest.raises(QueryBudgetExceeded, match="--max-queries=10"):
        model.query(np.zeros((5, 4)))
    with pytest.raises(ModelError, match=r"returned shape \(12,\)"):
        load_model("user_nets:flat", d_in=2).query(np.zeros((6, 2)))
    with pytest.raises(ModelError, match="NaN"):
        load_model("user_nets:nan", d_in=2).query(np.zeros((3, 2)))
    with pytest.raises(ModelError, match="no 'missing'"):
        load_model("user_nets:missing", d_in=2)
    with pytest.raises(ModelError, match="neither a file"):
        load_model(str(tmp_path / "absent.pt"))
    with pytest.raises(ModelError, match="not a function"):
        from_callable(3, 2)


# -- Step 1 --------------------------------------------------------------------------------


def _fake_training(losses_by_width: dict):
    """``train_students`` returning preset losses per (width, activation): the search's rule,
    not a trainer's trajectory, is under test."""
    calls = []

    def train(spec, X, y, seeds, **kwargs):
        calls.append((spec.hidden_sizes, spec.activation))
        loss = losses_by_width[(spec.hidden_sizes[0], spec.activation)]
        return [TrainResult(spec, np.zeros(spec.n_params), loss, 0.0, "budget") for _ in seeds]

    return train, calls


def test_step1_stops_at_the_first_width_below_tolerance_and_picks_the_best_activation(monkeypatch):
    X = np.random.default_rng(0).normal(size=(4000, 3))
    y = np.ones((4000, 1)) + X[:, :1]  # variance 1
    losses = {(1, "tanh"): 1e-2, (1, "relu"): 1e-3, (2, "tanh"): 1e-20, (2, "relu"): 1e-25,
              (4, "tanh"): 0.0, (4, "relu"): 0.0}
    train, calls = _fake_training(losses)
    monkeypatch.setattr(_expansion, "train_students", train)
    found = find_width(X, y, ["tanh", "relu"], n_probe=2)
    assert (found.width, found.activation, found.stop) == (2, "relu", "found")
    assert [c[0][0] for c in calls] == [1, 1, 2, 2]  # width 4 never trained
    assert math.isclose(found.tolerance, _expansion.ZERO_LOSS * np.var(y), rel_tol=1e-12)

    # a resumed search trains nothing it has
    train2, calls2 = _fake_training(losses)
    monkeypatch.setattr(_expansion, "train_students", train2)
    again = find_width(X, y, ["tanh", "relu"], n_probe=2, done=found.probes)
    assert again.width == 2 and calls2 == []


def test_step1_stops_on_a_plateau_of_small_losses_only(monkeypatch):
    X = np.random.default_rng(0).normal(size=(4000, 3))
    y = X[:, :1]
    stalls = {(1, "tanh"): 1e-3, (2, "tanh"): 2e-4, (4, "tanh"): 1e-9, (8, "tanh"): 3e-10, (16, "tanh"): 1e-30}
    train, calls = _fake_training(stalls)
    monkeypatch.setattr(_expansion, "train_students", train)
    found = find_width(X, y, ["tanh"], max_width=16)
    # 1 -> 2 gains 5x but at a large loss: no plateau; 4 -> 8 gains 3x at 1e-9: plateau at 4
    assert (found.width, found.stop) == (4, "plateau") and [c[0][0] for c in calls] == [1, 2, 4, 8]


def test_step1_reports_max_width_and_too_few_queries(monkeypatch):
    X = np.random.default_rng(0).normal(size=(400, 3))
    y = X[:, :1]
    train, calls = _fake_training({(w, "tanh"): 1e-3 for w in (1, 2, 3, 4, 8, 16, 32, 64)})
    monkeypatch.setattr(_expansion, "train_students", train)
    assert find_width(X, y, ["tanh"], max_width=3).stop == "max_width"
    assert [c[0][0] for c in calls] == [1, 2, 3]
    few = find_width(X[:60], y[:60], ["tanh"], max_width=64)  # width 4 has 21 parameters: 84 queries
    assert few.width is None and few.stop == "queries" and max(p.width for p in few.probes) == 2


# -- the command line ----------------------------------------------------------------------


def _script(model, path):
    torch.jit.script(model).save(str(path))
    return str(path)


FAST = ["--n-students", "4", "--ode-time", "5", "--optim-time", "5", "--probe-time", "3", "--finetune-time", "5",
        "--jobs", "1", "--n-eval", "2000", "--no-plots"]


def test_recover_a_torchscript_model_counts_queries_and_resumes(tmp_path):
    path = _script(_tanh_model(0, (3, 2, 1)), tmp_path / "m.pt")
    out = tmp_path / "run"
    args = ["recover", path, "--out", str(out), "--max-queries", "5000", *FAST]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["queries"]["total"] == report["queries"]["train"] + report["queries"]["test"] <= 5000
    assert report["summary"]["n_eval"] == 2000
    assert report["status"] == "recovered", report["summary"]
    assert report["summary"]["m_hat"] == [2] and report["summary"]["param_error"] <= 1e-8
    assert "RECOVERED" in result.output

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "students").iterdir()}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "none asked again" in again.output
    assert json.loads((out / "report.json").read_text())["queries"]["asked_now"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "students").iterdir()} == stamps

    other = _script(_tanh_model(1, (3, 2, 1)), tmp_path / "other.pt")
    refused = CliRunner().invoke(cli, ["recover", other, "--out", str(out), "--max-queries", "5000", *FAST])
    assert refused.exit_code != 0 and "holds a different run" in refused.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-queries", "20"], "raise --max-queries"),
        (["--n-train", "900", "--n-test", "200", "--max-queries", "1000"], "more than --max-queries=1000"),
        (["--queries", "nowhere"], "--queries='nowhere'"),
        (["--act", "cosine"], "--act"),
        (["--act", "relu"], "uses tanh"),
        (["--width", "2", "--act", "auto"], "--width=2 skips Step 1"),
    ],
)
def test_bad_input_exits_nonzero_with_a_message(args, message, tmp_path):
    path = _script(_tanh_model(0, (6, 2, 1)), tmp_path / "m.pt")
    result = CliRunner().invoke(cli, ["recover", path, "--out", str(tmp_path / "run"), *FAST, *args])
    assert result.exit_code != 0 and message in result.output, result.output


def test_a_file_that_does_not_load_and_a_callable_that_answers_wrongly(tmp_path, monkeypatch):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["recover", str(junk), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "not a torch file" in result.output
    (tmp_path / "wrong_nets.py").write_text("import numpy as np\ndef f(X):\n    return np.zeros((3, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["recover", "wrong_nets:f", "--din", "2", "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "returned shape (3, 3)" in result.output
    assert not (tmp_path / "b" / "config.json").exists()


@pytest.mark.slow
def test_api_recovers_a_relu_callable_with_unknown_width_and_activation(tmp_path):
    """Step 1 chooses the activation among several by which reaches near-zero loss first."""
    rng = np.random.default_rng(3)
    W, b, a = rng.normal(size=(2, 4)), rng.normal(size=2), rng.normal(size=(1, 2))

    def network(X):
        return np.maximum(X @ W.T + b, 0.0) @ a.T

    result = ec.recover(network, din=4, act="auto", n_students=4, jobs=1, ode_time=5, optim_time=5, probe_time=2,
                        n_eval=1000, max_queries=8000, plots=False, out=tmp_path / "run")
    assert result.report["step1"]["activation"] == "relu"
    assert result.spec.hidden_sizes == (2,) and result.report["status"] == "recovered"
    X = rng.normal(size=(100, 4))
    assert np.allclose(result.predict(X), network(X), rtol=0, atol=1e-10)


def test_recover_from_query_pairs_splits_them_and_skips_step1_with_width(tmp_path):
    spec = MLPSpec((3, 2, 1), "tanh")
    theta = np.random.default_rng(4).normal(size=spec.n_params)
    X = np.random.default_rng(5).uniform(-2, 2, size=(3000, 3))
    np.savez(tmp_path / "pairs.npz", X=X, y=spec.forward(theta, X))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["recover", str(tmp_path / "pairs.npz"), "--width", "2", "--act", "tanh",
                                      "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["queries"] == {**report["queries"], "train": 2400, "test": 600, "total": 3000}
    assert report["step1"]["stop"] == "given" and report["students"]["width"] == [4]
    assert report["summary"]["m_hat"] == [2] and report["status"] == "recovered", report["summary"]
    assert "param_error" not in report["summary"]  # the pairs carry no weights to compare with
