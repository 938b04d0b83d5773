"""``ec mnist`` (recover a teacher trained on images) and ``ec teacher`` (train one)."""

from __future__ import annotations

import click

from ..mnist import MNIST, TEACHER
from . import cli, config_option


class TqdmProgress:
    """Renders the pipeline's progress events as tqdm bars and messages (on stderr).

    When stderr is not a terminal (a log file) the bars are off and one line is written
    per tenth of each training phase instead.
    """

    def __init__(self):
        import sys

        from tqdm.auto import tqdm

        self.tqdm, self.bar, self.key = tqdm, None, None
        self.log_lines = not sys.stderr.isatty()

    def _bar(self, key, total, desc):
        if self.key != key:
            self.close()
            self.bar = self.tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True, disable=self.log_lines)
            self.key = key
        return self.bar

    def _log(self, phase, epoch, every, text):
        if self.log_lines and epoch % every == 0:
            self.tqdm.write(f"  {phase} epoch {epoch}: {text}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None

    def __call__(self, event: str, **info):
        if event == "teacher_epoch":
            bar = self._bar("teacher", None, "teacher")
            bar.update(1)
            bar.set_postfix(val_acc=f"{info['val_accuracy']:.4f}", val_loss=f"{info['val_loss']:.3g}", refresh=False)
            self._log("teacher", info["epoch"], 10, f"validation accuracy {info['val_accuracy']:.4f}")
        elif event == "epoch":
            bar = self._bar((info["phase"], info["max_epochs"]), info["max_epochs"], info["phase"])
            bar.n = info["epoch"]
            bar.set_postfix(mse=f"{info['loss']:.3g}", best=f"{info['best']:.3g}", active=info["active"], refresh=False)
            bar.refresh()
            self._log(info["phase"], info["epoch"], max(1, info["max_epochs"] // 10),
                      f"median epoch MSE {info['loss']:.3g}, best {info['best']:.3g}, {info['active']} training")
        elif event == "stage":
            self.close()
            extra = f" ({info['todo']} to train, {info['done']} done)" if "todo" in info else ""
            self.tqdm.write(f"[{info['name']}]{extra}")
        elif event == "message":
            self.tqdm.write(info["text"])


def _fail_cleanly(func, *args, **kwargs):
    """Known failure modes become one-line errors (exit 1); bad parameters stay usage errors."""
    from ..config import ConfigError
    from ..data import DatasetUnavailable
    from ..reconstruct import ReconstructionError
    from ..runs import RunDirError

    try:
        return func(*args, **kwargs)
    except ConfigError:
        raise
    except (DatasetUnavailable, RunDirError, ReconstructionError, FileNotFoundError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@config_option(MNIST.name)
@MNIST.click_options
def mnist(config, **values):
    """Recover a teacher trained on MNIST, Fashion-MNIST, CIFAR-10 or digits (paper Table 1).

    \b
    Trains (or loads) the teacher, trains N students on its logits with the torch backend,
    masks uninformative pixels, clusters, reconstructs and fine-tunes, then reports the
    test RMSE of the logits, m_hat / r, the mean cosine distance of matched neurons and
    accuracies. A run directory is written; running the command again resumes it.

    \b
    Examples:
      ec mnist --act relu
      ec mnist --act g --r 16 --n-students 5 --max-epochs 3000
      ec mnist --dataset mnist --query-dataset fashion      (paper Table 2)
    """
    from ..mnist import run_mnist

    progress = TqdmProgress()
    try:
        report = _fail_cleanly(run_mnist, config=config, progress=progress, **values)
    finally:
        progress.close()
    click.echo(format_report(report))


@cli.command()
@config_option(TEACHER.name)
@TEACHER.click_options
def teacher(config, **values):
    """Train an MLP teacher on an image dataset (cross-entropy, Adam, early stopping).

    \b
    Example:
      ec teacher --dataset mnist --act relu --r 64
    """
    from ..mnist import teacher_path, train_teacher

    params = TEACHER.resolve(values, config)
    progress = TqdmProgress()
    try:
        t = _fail_cleanly(train_teacher, params, progress)
    finally:
        progress.close()
    click.echo(
        f"teacher {'-'.join(map(str, t.spec.layer_sizes))} {t.spec.activation} on {t.trained_on} ({t.source}): "
        f"test accuracy {t.test_accuracy:.4f}, validation accuracy {t.val_accuracy:.4f}, {t.epochs} epochs\n"
        f"saved to {teacher_path(params)}"
    )


def format_report(report: dict) -> str:
    """The Table 1 / Table 2 summary of an ``ec mnist`` report as text."""
    t1, tea, st = report["table1"], report["teacher"], report["students"]
    sizes = tea["layer_sizes"]
    lines = [
        f"{report['dataset']} teacher {'-'.join(map(str, sizes))} {tea['activation']}, queries: "
        f"{report['n_queries']} {report['query_dataset']} images ({report['query_source']})",
        f"  test RMSE of logits        {t1['test_rmse']:.3g}",
        f"  m_hat / r                  {t1['m_hat']}/{t1['r']} = {t1['m_hat_over_r']:.3g}"
        f"  (excess {t1['excess']}, missing {t1['missing']})",
        f"  <d(w, w*)>                 {t1['mean_cos_dist']:.3g} on {report['mask']['kept']} masked inputs "
        f"({report['mask']['method']}), {t1['mean_cos_dist_all_inputs']:.3g} on all",
    ]
    if "teacher_accuracy" in t1:
        lines.append(f"  accuracy teacher / recon   {t1['teacher_accuracy']:.4f} / {t1['reconstruction_accuracy']:.4f}"
                     f"  (argmax agreement {t1['agreement']:.4f})")
    else:
        lines.append(f"  argmax agreement           {t1['agreement']:.4f}")
    for name, c in report["cross_dataset"].items():
        if "skipped" in c:
            lines.append(f"  on {name}: skipped ({c['skipped']})")
        else:
            lines.append(f"  on {name} test images:     RMSE {c['rmse']:.3g}, agreement {c['agreement']:.4f}")
    sec = report["seconds"]
    lines += [
        f"  students: N={len(st['train_mse'])}, median train MSE {_median(st['train_mse']):.3g}, "
        f"median test RMSE {_median(st['test_rmse']):.3g}, {max(st['epochs'])} epochs",
        f"  time: teacher {sec['teacher']:.0f}s, students {sec['students']:.0f}s, "
        f"reconstruction {sec['reconstruction']:.0f}s, total {sec['total']:.0f}s",
        f"run directory: {report['run_dir']}",
    ]
    return "\n".join(lines)


def _median(values) -> float:
    import numpy as np

    return float(np.median(values))
