"""The one renderer of :mod:`ec.progress` events: tqdm bars and lines on stderr."""

from __future__ import annotations

import sys

from ..progress import Event


class Progress:
    """Renders progress events: a bar over the students, the training epochs or the grid's
    units, and one line per stage or message.

    When stderr is not a terminal (a log file), epoch bars are off and one line is written
    per tenth of each training phase instead.
    """

    def __init__(self, enabled: bool = True):
        from tqdm.auto import tqdm

        self.tqdm, self.bar, self.key = tqdm, None, None
        self.enabled = enabled
        self.log_lines = not sys.stderr.isatty()
        self.units = {"done": 0, "failed": 0, "skip": 0, "redo": 0}

    def _bar(self, key, total, desc, unit, initial=0, disable=False):
        if self.key != key:
            self.close()
            self.bar = self.tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                                 disable=disable or not self.enabled, file=sys.stderr)
            self.key = key
        return self.bar

    def _log(self, phase, epoch, every, text, unit="epoch"):
        if self.log_lines and epoch % every == 0:
            self.tqdm.write(f"  {phase} {unit} {epoch}: {text}", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, event: str, **info):
        if event == Event.STAGE and info.get("name") == "students" and "total" in info and "todo" not in info:
            # students counted one by one (the image pipeline counts epochs: Event.EPOCH)
            self.close()
            self._bar(("students",), info["total"], "students", "student", initial=info.get("done", 0))
        elif event == Event.STUDENT:
            if self.key and self.key[0] == "students" and not info.get("resumed"):
                res = info["result"]
                self.bar.set_postfix_str("failed" if res.failed else f"last loss {res.loss:.1e}")
                self.bar.update(1)
        elif event == Event.TEACHER_EPOCH:
            bar = self._bar("teacher", None, "teacher", "ep", disable=self.log_lines)
            bar.update(1)
            bar.set_postfix(val_acc=f"{info['val_accuracy']:.4f}", val_loss=f"{info['val_loss']:.3g}", refresh=False)
            self._log("teacher", info["epoch"], 10, f"validation accuracy {info['val_accuracy']:.4f}")
        elif event == Event.EPOCH:
            unit = info.get("unit", "epoch")  # gn counts Gauss-Newton steps
            bar = self._bar((info["phase"], info["max_epochs"]), info["max_epochs"], info["phase"],
                            "ep" if unit == "epoch" else unit, disable=self.log_lines)
            bar.n = info["epoch"]
            bar.set_postfix(mse=f"{info['loss']:.3g}", best=f"{info['best']:.3g}", active=info["active"], refresh=False)
            bar.refresh()
            self._log(info["phase"], info["epoch"], max(1, info["max_epochs"] // 10),
                      f"median {unit} MSE {info['loss']:.3g}, best {info['best']:.3g}, {info['active']} training",
                      unit)
        elif event == Event.UNIT:
            self._unit(info["status"], info.get("total"))
        elif event == Event.STAGE:
            self.close()
            extra = f" ({info['todo']} to train, {info['done']} done)" if "todo" in info else ""
            self.tqdm.write(f"{info['name']}...{extra}", file=sys.stderr)
        elif event == Event.MESSAGE:
            self.tqdm.write(info["text"], file=sys.stderr)

    def _unit(self, status: str, total: int | None) -> None:
        bar = self._bar("units", total, None, "unit")
        self.units[status] += 1
        if status == "skip":
            bar.total -= 1  # the bar and its ETA count only the work of this invocation
        elif status in ("done", "failed"):
            bar.set_postfix(done=self.units["done"], failed=self.units["failed"],
                            remaining=bar.total - bar.n - 1, refresh=False)
            bar.update(1)
