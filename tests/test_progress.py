"""The one progress renderer handles every event of the protocol (ec.progress.Event)."""

import numpy as np

from ec.cli._progress import Progress
from ec.mlp import MLPSpec
from ec.progress import Event
from ec.train import TrainResult


def _student(loss):
    return TrainResult(MLPSpec((2, 2, 1), "g"), np.zeros(9), loss, 0.0, "budget", seed=0)


def test_every_event_renders_and_stages_and_messages_reach_stderr(capsys):
    with Progress() as progress:
        progress(Event.STAGE, name="students", total=2, done=0)
        progress(Event.STUDENT, index=0, result=_student(1e-30), done=1, total=2, resumed=False)
        progress(Event.STUDENT, index=1, result=_student(2e-30), done=2, total=2, resumed=True)
        progress("stage", name="cluster")  # plain strings are the same events
        progress(Event.STAGE, name="students", total=3000, todo=5, done=0)  # image pipeline: epochs follow
        progress(Event.EPOCH, phase="students", epoch=10, max_epochs=100, loss=0.1, best=0.05, active=5)
        progress(Event.TEACHER_EPOCH, epoch=1, val_accuracy=0.9, val_loss=0.3)
        progress(Event.MESSAGE, text="loaded teacher t.npz")
    err = capsys.readouterr().err
    assert "cluster..." in err and "students... (5 to train, 0 done)" in err and "loaded teacher t.npz" in err
    assert progress.bar is None  # closed on leaving the block


def test_grid_units_count_what_this_invocation_did():
    progress = Progress()
    for status in ("skip", "skip", "done", "failed", "redo", "done"):
        progress(Event.UNIT, status=status, total=6)
    assert progress.units == {"done": 2, "failed": 1, "skip": 2, "redo": 1}
    assert progress.bar.total == 4 and progress.bar.n == 3  # skipped units leave the bar
    progress.close()
    quiet = Progress(enabled=False)  # --no-progress: no bar drawn, the counts still kept
    quiet(Event.UNIT, status="done", total=1)
    assert quiet.units["done"] == 1
