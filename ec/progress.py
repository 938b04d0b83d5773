"""The progress protocol: what the pipelines report while they run.

Code below :mod:`ec.cli` never prints; it calls ``progress(event, **info)`` when given a
callable, and :class:`ec.cli._progress.Progress` renders the events. The events and their
``info``:

========================  ==========================================================================
``Event.STAGE``           ``name``; for ``name == "students"`` also ``total`` and ``done`` (students
                          already finished), for the image pipeline optionally ``todo``
``Event.STUDENT``         ``index``, ``result`` (:class:`ec.train.TrainResult`), ``done``, ``total``,
                          ``resumed`` (loaded from disk, not trained now)
``Event.EPOCH``           batched training: ``phase``, ``epoch``, ``max_epochs``, ``loss`` (median),
                          ``best``, ``active`` (students still training), optionally ``unit``
                          (``"step"`` when ``epoch`` counts Gauss-Newton steps)
``Event.TEACHER_EPOCH``   ``epoch``, ``val_accuracy``, ``val_loss``
``Event.MESSAGE``         ``text``: one line for the user
``Event.UNIT``            grid units: ``status`` (``done``, ``failed``, ``skip``, ``redo``)
========================  ==========================================================================

``Event`` members are strings (``Event.STAGE == "stage"``), so a callback may compare with
either.
"""

from __future__ import annotations

from enum import Enum


class Event(str, Enum):
    STAGE = "stage"
    STUDENT = "student"
    EPOCH = "epoch"
    TEACHER_EPOCH = "teacher_epoch"
    MESSAGE = "message"
    UNIT = "unit"

    def __str__(self) -> str:
        return self.value
