"""Image teachers, the `ec mnist` pipeline end to end (on scikit-learn digits), its resumable
run directory, Table 1 metrics, and the CLI's exit codes on bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ec.cli import cli
from ec.config import ConfigError
from ec.queries import load_dataset, torchvision_available
from ec.teachers.images import ImageTeacher, accuracy, train_image_teacher
from ec.experiments.mnist import MNIST, run_mnist, table1_metrics
from ec.runs import RunDirError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_image_teacher_trains_saves_and_loads(digits, tmp_path):
    t = train_image_teacher(digits, (8,), "relu", seed=0, max_epochs=15, lr=5e-3, threads=1)
    assert t.spec.layer_sizes == (64, 8, 10) and t.trained_on == "digits" and 1 <= t.epochs <= 15
    assert t.test_accuracy == pytest.approx(accuracy(t.predict(digits.X_test), digits.y_test))
    assert t.test_accuracy > 0.85
    t.save(tmp_path / "t.npz")
    back = ImageTeacher.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.params, t.params)
    assert back.info() == t.info()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageTeacher.load(tmp_path / "missing.npz")


def test_table1_metrics_of_a_perfect_reconstruction(digits):
    t = train_image_teacher(digits, (4,), "g", seed=1, max_epochs=5)
    mask = np.ones(64, dtype=bool)
    mask[:8] = False
    # The reconstruction is the teacher with its hidden neurons permuted.
    (W, b), (A, c) = t.spec.unpack(t.params)
    perm = [2, 0, 3, 1]
    theta = t.spec.pack([(W[perm], b[perm]), (A[:, perm], c)])
    y = t.predict(digits.X_test)
    out, rows = table1_metrics(t.spec, theta, t, mask, digits.X_test, y, digits)
    assert out["test_rmse"] < 1e-12 and out["m_hat_over_r"] == 1.0 and out["excess"] == 0
    assert out["mean_cos_dist"] < 1e-12 and out["agreement"] == 1.0
    assert out["teacher_accuracy"] == out["reconstruction_accuracy"] == pytest.approx(t.test_accuracy)
    assert sorted(r["reconstructed"] for r in rows) == [0, 1, 2, 3]
    # Dropping one neuron shows up as a missing neuron and a test error.
    theta3 = t.spec.with_hidden_sizes((3,)).pack([(W[:3], b[:3]), (A[:, :3], c)])
    out3, _ = table1_metrics(t.spec.with_hidden_sizes((3,)), theta3, t, mask, digits.X_test, y)
    assert out3["missing"] == 1 and out3["test_rmse"] > 1e-3 and "teacher_accuracy" not in out3


def test_schema_defaults_and_bad_values():
    p = MNIST.resolve({})
    assert p["act"] == "relu" and p["r"] == (16,) and p["n_students"] == 5 and p["gamma"] == 0.5
    assert MNIST.resolve({"r": "30-30-30"})["r"] == (30, 30, 30)  # a deep teacher (ec.layerwise)
    with pytest.raises(ConfigError, match="--dataset='svhn' is not allowed; allowed: mnist, fashion, cifar10, digits"):
        MNIST.resolve({"dataset": "svhn"})
    with pytest.raises(ConfigError, match="--device='tpu'"):
        MNIST.resolve({"device": "tpu"})


def test_deep_teachers_get_the_layerwise_estimator_with_reexpand(tmp_path):
    from ec.reconstruct import LayerwiseExpandAndCluster
    from ec.experiments.mnist import _estimator

    deep = _estimator(MNIST.resolve({"r": "4-3", "rho": 2, "reexpand": 3}), (4, 3), None, tmp_path)
    assert isinstance(deep, LayerwiseExpandAndCluster) and deep.reexpand == 3
    assert deep.student_hidden_sizes == (8, 6) and deep.backend == "torch" and deep.retrain_dir == tmp_path
    shallow = _estimator(MNIST.resolve({"r": "4", "rho": 2}), (4,), None, tmp_path)
    assert not isinstance(shallow, LayerwiseExpandAndCluster) and shallow.student_hidden_sizes == (8,)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["mnist", "--act", "swish"], 2, "unknown activation 'swish'"),
        (["mnist", "--rho", "0.5"], 2, "--rho=0.5 is not allowed"),
        (["mnist", "--n-train", "-3"], 2, "--n-train=-3 is not allowed"),
        (["mnist", "--mask", "lasso"], 2, "allowed: variance, importance, boruta, none"),
        (["teacher", "--r", "0"], 2, "--r"),
        # Refused before any training: ceil(0.3 * 3) = 1 neuron cannot show alignment.
        (["mnist", "--gamma", "0.3", "--n-students", "3"], 2, "--gamma=0.3 with --n-students=3"),
        (["mnist", "--reexpand", "2"], 2, "--reexpand=2 applies to deep teachers only"),
        # A GPU that is not there: said at once (no GPU here, or fewer than 8 on a GPU machine).
        (["mnist", "--device", "cuda:7"], 2, "--device: device='cuda:7'"),
        (["teacher", "--device", "cuda:7"], 2, "--device: device='cuda:7'"),
    ],
)
def test_cli_bad_input_exit_codes(args, code, message):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == code, res.output
    assert message in res.output


def test_cli_missing_dataset_is_a_clean_error(tmp_path):
    if torchvision_available():
        pytest.skip("torchvision installed")
    res = CliRunner().invoke(cli, ["mnist", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and "not available" in res.output and "Traceback" not in res.output


def test_cli_missing_query_source_says_how_to_get_it(tmp_path):
    if torchvision_available():
        pytest.skip("torchvision installed")
    res = CliRunner().invoke(cli, ["mnist", "--dataset", "digits", "--queries", "digits,cifar10:10", "--data-dir",
                                   str(tmp_path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and "cifar10" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run" / "students").exists()  # refused before any training


def test_cli_teacher_then_mismatched_mnist(tmp_path):
    path = tmp_path / "t.npz"
    args = ["teacher", "--dataset", "digits", "--act", "g", "--r", "4", "--teacher-epochs", "5", "--out", str(path)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and path.is_file() and path.with_suffix(".json").is_file()
    res = CliRunner().invoke(cli, ["mnist", "--dataset", "digits", "--teacher", str(path), "--act", "relu",
                                   "--r", "4", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "its activation is 'g', --act is 'relu'" in res.output


TINY = dict(dataset="digits", act="g", r=4, rho=2, n_students=3, max_epochs=100, finetune_epochs=20,
            batch_size=128, lr=3e-3, teacher_epochs=30, threads=1, eval_datasets="mnist", backend="torch",
            queries="digits")


@pytest.mark.slow
def test_tiny_end_to_end_run_resumes(tmp_path):
    out = tmp_path / "run"
    events = []
    report = run_mnist(out=str(out), progress=lambda e, **i: events.append(e), **TINY)
    t1 = report["table1"]
    std = np.std(ImageTeacher.load(out / "teacher.npz").predict(load_dataset("digits").X_test))
    assert 1 <= t1["m_hat"] and t1["r"] == 4 and np.isfinite(t1["test_rmse"]) and t1["test_rmse"] < std
    assert 0 <= t1["mean_cos_dist"] <= 2 and 0 <= t1["reconstruction_accuracy"] <= 1
    assert report["students"]["epochs"] == [100] * 3
    assert "784 inputs per image" in report["cross_dataset"]["mnist"]["skipped"]
    for name in ("config.json", "teacher.npz", "report.json", "reconstruction.npz", "neurons.csv",
                 "plots/mask.png", "plots/neurons.png", "plots/alignment.png", "plots/students.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["table1"] == t1
    assert {"stage", "epoch", "teacher_epoch"} <= set(events)

    # Resuming: nothing is retrained, the same report comes back.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "students").glob("0*.npz")}
    again = run_mnist(out=str(out), **TINY)
    assert again["table1"] == t1
    # Other clustering parameters: students reused, reconstruction redone.
    other = run_mnist(out=str(out), **{**TINY, "gamma": 0.9})
    assert other["recon_key"]["gamma"] == 0.9
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # A larger epoch budget continues the students from their checkpoint.
    longer = run_mnist(out=str(out), **{**TINY, "max_epochs": 105})
    assert longer["students"]["epochs"] == [105] * 3
    # Parameters that change what a student is need another run directory.
    with pytest.raises(RunDirError, match="lr: saved 0.003, now 0.01"):
        run_mnist(out=str(out), **{**TINY, "lr": 1e-2})


def test_gn_students_on_generated_queries_resume_and_refuse_other_queries(tmp_path):
    out = tmp_path / "run"
    tiny = dict(dataset="digits", act="relu", r=4, rho=2, n_students=3, gamma=0.6, teacher_epochs=30, threads=1,
                eval_datasets="none", queries="digits:600,lines:600", optim_steps=8, finetune_steps=10,
                backend="gn")
    report = run_mnist(out=str(out), **tiny)
    assert report["backend"] == report["finetune_backend"] == "gn" and report["n_queries"] == 1200 and report["queries"] == "digits:600,lines:600"
    assert report["students"]["epochs"] == [8] * 3 and report["table1"]["r"] == 4
    stamps = {p: p.stat().st_mtime_ns for p in (out / "students").glob("0*.npz")}
    assert len(stamps) == 3
    assert run_mnist(out=str(out), **{**tiny, "gamma": 0.9})["recon_key"]["gamma"] == 0.9
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # students reused
    with pytest.raises(RunDirError, match="queries"):
        run_mnist(out=str(out), **{**tiny, "queries": "digits:600,lines:700"})


@pytest.mark.parametrize("values, message", [
    ({"queries": "svhn"}, "--queries='svhn': cannot parse"),
    ({"backend": "gn", "r": "8-8"}, "--backend gn trains students with one hidden layer"),
    ({"finetune_backend": "gn", "r": "8-8"}, "--finetune-backend gn trains networks with one hidden layer"),
    ({"backend": "auto"}, "--backend='auto' is not allowed; allowed: torch, gn"),
    ({"query_dataset": "fashion", "queries": "mnist"}, "not both"),
])
def test_queries_and_backend_are_checked_before_any_work(values, message):
    with pytest.raises(ConfigError, match=message):
        MNIST.resolve(values)


def test_students_default_to_torch_and_a_shallow_reconstruction_is_finished_by_gn(tmp_path):
    from ec.experiments.mnist import _estimator, finetune_backend

    p = MNIST.resolve({"device": "cpu"})
    assert p["backend"] == "torch" and finetune_backend(p) == "gn"
    assert finetune_backend(MNIST.resolve({"r": "8-8"})) == "torch"
    assert finetune_backend(MNIST.resolve({"finetune_backend": "torch"})) == "torch"
    est = _estimator(p, (16,), None, tmp_path)
    assert est.backend == "torch" and est.finetune_backend == "gn" and set(est.finetune_options) == {"progress"}
    assert est.finetune_budget.optim_steps == p["finetune_steps"]
    same = _estimator(MNIST.resolve({"backend": "gn"}), (16,), None, tmp_path)
    assert same.backend == "gn" and same.finetune_backend is None


def test_bundled_configs_resolve_and_document_the_defaults():
    from pathlib import Path

    from ec.experiments.mnist import TEACHER

    root = Path(__file__).parents[1] / "configs"
    assert MNIST.resolve({}, root / "mnist.toml") == MNIST.resolve({})
    assert TEACHER.resolve({}, root / "mnist.toml")["r"] == (64,)
    assert MNIST.resolve({}, root / "mnist-paper.toml")["max_epochs"] == 25000
    assert MNIST.resolve({}, root / "mnist-table2.toml")["query_dataset"] == "fashion"
