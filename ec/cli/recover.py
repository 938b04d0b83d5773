"""``ec recover``: recover a network a user hands in."""

from __future__ import annotations

import math

import click

from ..experiments.recover import RECOVER, recover_model
from . import cli, config_option, fail_cleanly
from ._format import _fmt
from ._progress import Progress


@cli.command()
@click.argument("model")
@config_option(RECOVER.name)
@RECOVER.click_options
def recover(model, config, **values):
    """Recover the layer sizes and weights of MODEL from its answers to queries.

    \b
    MODEL is one of
      model.pt             TorchScript (torch.jit.script(m).save(path)) or a state dict
                           (torch.save(m.state_dict(), path), give --act); a whole pickled
                           module only with --allow-pickle
      pkg.module:function  your function of an (n, d) float64 array -> (n, k); give --din
      pairs.npz / .csv     query pairs: X and y arrays, or CSV columns x..., y...

    Step 1 trains students of width 1, 2, 4, ... until one reaches near-zero loss; then
    N students rho times that wide are clustered (Expand-and-Cluster) and the network is
    rebuilt and fine-tuned. Every query to MODEL is counted (--max-queries). The run
    directory keeps the queries, Step 1 and every finished student: rerunning the same
    command resumes it.
    """
    params = RECOVER.resolve(values, config)
    with Progress() as progress:
        report = fail_cleanly(recover_model, model, params, params["out"] or None, progress)
    print_recovery(report)


def print_recovery(report: dict) -> None:
    q, s1, s = report["queries"], report["step1"], report["summary"]
    click.echo(f"model {report['model']['source']} ({report['model']['kind']}): {report['model']['d_in']} inputs, "
               f"{report['model']['d_out']} outputs; queries: {q['total']}"
               + (f" of --max-queries {q['max']}" if q["max"] else "") + f" ({q['train']} training, {q['test']} test)")
    if s1["stop"] == "given":
        click.echo(f"step 1 skipped: width {s1['width']} given")
    else:
        how = "near-zero loss" if s1["stop"] == "found" else "the loss stops falling with the width"
        click.echo(f"step 1: {how} at width {s1['width']} with {s1['hidden_layers']} hidden layer(s), "
                   f"{s1['activation']} ({len(s1['probes'])} probes)")
    st = report["students"]
    finite = sorted(x for x in st["losses"] if math.isfinite(x))
    click.echo(f"{st['n']} students of width {'-'.join(map(str, st['width']))}: best loss "
               f"{_fmt(finite[0]) if finite else '-'}, median {_fmt(finite[len(finite) // 2]) if finite else '-'}")
    known = f" (the model: {'-'.join(map(str, s['r']))})" if "r" in s else ""
    click.echo(f"recovered {'-'.join(map(str, s['layer_sizes']))} {s['activation']}{known}; test RMSE "
               f"{_fmt(s['test_rmse'])}; outputs agree to {s['output_bits']:.1f} bits on {s['n_eval']} inputs")
    if "param_error" in s:
        click.echo(f"largest parameter error after matching symmetries: {_fmt(s['param_error'])}")
    verdict = {"recovered": "RECOVERED", "inexact": "INEXACT: the outputs or weights are not exact",
               "wrong-size": "NOT RECOVERED: the widths differ from the model's"}[report["status"]]
    click.echo(verdict)
    click.echo(f"results in {report['result_dir']}")
