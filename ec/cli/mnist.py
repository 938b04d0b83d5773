"""``ec mnist``: recover a teacher trained on images (paper Table 1, Table 2)."""

from __future__ import annotations

import click

from ..experiments.mnist import MNIST
from . import cli, config_option, fail_cleanly
from ._progress import Progress


@cli.command()
@config_option(MNIST.name)
@MNIST.click_options
def mnist(config, **values):
    """Recover a teacher trained on MNIST, Fashion-MNIST, CIFAR-10 or digits (paper Table 1).

    \b
    Trains (or loads) the teacher, trains N students on its logits (torch Adam), masks
    uninformative pixels, clusters, reconstructs and fine-tunes (float64 Gauss-Newton for one
    hidden layer: to machine precision when the clusters are right), then reports the
    test RMSE of the logits, m_hat / r, the mean cosine distance of matched neurons and
    accuracies. A run directory is written; running the command again resumes it.

    \b
    Examples:
      ec mnist --act relu
      ec mnist --act g --r 16 --n-students 5 --max-epochs 3000
      ec mnist --dataset mnist --query-dataset fashion      (paper Table 2)
    """
    from ..experiments.mnist import run_mnist

    with Progress() as progress:
        report = fail_cleanly(run_mnist, config=config, progress=progress, **values)
    click.echo(format_report(report))


def format_report(report: dict) -> str:
    """The Table 1 / Table 2 summary of an ``ec mnist`` report as text."""
    t1, tea, st = report["table1"], report["teacher"], report["students"]
    sizes = tea["layer_sizes"]
    lines = [
        f"{report['dataset']} teacher {'-'.join(map(str, sizes))} {tea['activation']}, {report['n_queries']} queries "
        f"({report['queries']}), students trained by {report['backend']}, fine-tuned by "
        f"{report.get('finetune_backend', report['backend'])}",
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
    cov = report["coverage"]
    thin = [f"{c['neuron']} ({c['minority']})" for c in cov["neurons"] if not c["covered"]]
    lost = [f"{c['neuron']} ({c['minority']})" for c in cov["neurons"] if not c["found"]]
    lines.append(f"  teacher neurons with fewer queries on one side than the {cov['rank']} dimensions the queries "
                 f"span: {', '.join(thin) or 'none'}; missing: {', '.join(lost) or 'none'}")
    for name, c in report["cross_dataset"].items():
        if "skipped" in c:
            lines.append(f"  on {name}: skipped ({c['skipped']})")
        else:
            lines.append(f"  on {name} test images:     RMSE {c['rmse']:.3g}, agreement {c['agreement']:.4f}")
    sec = report["seconds"]
    lines += [
        f"  students: N={len(st['train_mse'])}, median train MSE {_median(st['train_mse']):.3g}, "
        f"median test RMSE {_median(st['test_rmse']):.3g}, {max(st['epochs'])} "
        f"{'steps' if report['backend'] == 'gn' else 'epochs'}",
        f"  time: teacher {sec['teacher']:.0f}s, students {sec['students']:.0f}s, "
        f"reconstruction {sec['reconstruction']:.0f}s, total {sec['total']:.0f}s",
        f"run directory: {report['run_dir']}",
    ]
    return "\n".join(lines)


def _median(values) -> float:
    import numpy as np

    return float(np.median(values))
