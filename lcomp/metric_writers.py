"""Where training metrics go: TensorBoard event files and a JSONL file, written by process 0 only."""

from __future__ import annotations

import json
import pathlib
import time


class MetricWriter:
    """Writes scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>/tensorboard`."""

    def __init__(self, workdir: str | pathlib.Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter  # protobuf only; no TensorFlow needed

            self._tb = SummaryWriter(str(workdir / "tensorboard"))

    def write_scalars(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in clean.items():
                self._tb.add_scalar(key, value, int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
    """Reads back a metrics.jsonl file (for notebooks and tests)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
