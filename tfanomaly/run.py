"""The run folder: one owner for its layout.

    RUN/config.yaml              the resolved config (written when training starts)
    RUN/backup/                  the training state every train.backup_every_steps (`--resume` continues here)
    RUN/checkpoints/last.keras   the last epoch's model
    RUN/checkpoints/step_N.keras kept every train.checkpoint_every epochs
    RUN/logs/                    TensorBoard + history.csv
    RUN/samples/epoch_NNN.png    sample grids
    RUN/model.keras              the final model (safe-mode loadable)
    RUN/train_summary.json       steps, time, images/s, monitor values
    RUN/eval/                    the evaluation report, with thresholds.json (the Decision)

Training, evaluation, export, predict, the CLI, bench scripts and tests reach
these paths through :class:`Run` only. TensorFlow is imported only by
:meth:`Run.load_model`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tfanomaly.errors import UserError


class Run:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- layout -------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def model_file(self) -> Path:
        return self.path / "model.keras"

    @property
    def summary_file(self) -> Path:
        return self.path / "train_summary.json"

    @property
    def backup_dir(self) -> Path:
        return self.path / "backup"

    @property
    def backup_weights(self) -> Path:
        return self.backup_dir / "state.weights.h5"

    @property
    def backup_info(self) -> Path:
        return self.backup_dir / "state.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.keras"

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:07d}.keras"

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of the kept ``step_N.keras`` checkpoints, by step."""
        out = []
        for p in self.checkpoints_dir.glob("step_*.keras"):
            m = re.fullmatch(r"step_(\d+)\.keras", p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def history_file(self) -> Path:
        return self.logs_dir / "history.csv"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def thresholds_file(self) -> Path:
        from tfanomaly.decision import FILE_NAME

        return self.eval_dir / FILE_NAME

    # -- state ----------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.config_file.exists()

    @property
    def finished(self) -> bool:
        return self.model_file.exists() and self.summary_file.exists()

    def config(self):
        from tfanomaly.config import load_config

        if not self.config_file.exists():
            raise UserError(f"{self.path}: no config.yaml: is this a run directory?")
        return load_config(self.config_file)

    def summary(self) -> dict:
        if not self.summary_file.exists():
            raise UserError(f"{self.path}: no train_summary.json: this run has not finished training")
        return json.loads(self.summary_file.read_text())

    def decision(self):
        """The calibrated :class:`~tfanomaly.decision.Decision` of the run's evaluation (None before ``eval``)."""
        from tfanomaly.decision import Decision

        return Decision.load(self.thresholds_file) if self.thresholds_file.exists() else None

    def load_model(self):
        return load_model(self.path)

    @classmethod
    def write(cls, path: str | os.PathLike, model, cfg, decision=None) -> Run:
        """A run folder as training and evaluation leave it, from a model in
        memory: model.keras, config.yaml and, with a ``decision`` (a
        :class:`~tfanomaly.decision.Decision` or its JSON dict), eval/thresholds.json.
        For tests, benchmarks and tools that make models without ``tfanomaly train``."""
        from tfanomaly.config import save_config
        from tfanomaly.decision import Decision

        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        model.save(run.model_file)
        save_config(cfg, run.config_file)
        if decision is not None:
            if isinstance(decision, dict):
                decision = Decision.from_json(decision)
            decision.save(run.thresholds_file)
        return run


def load_model(run_dir: str | os.PathLike):
    """Load the final model of a run directory, or a ``.keras`` file (safe mode)."""
    import keras

    p = Path(run_dir)
    path = Run(p).model_file if p.is_dir() else p
    if not path.exists():
        raise UserError(f"{p}: no model.keras here: is this a finished run directory?")
    # importing the families registers their classes for deserialization
    from tfanomaly.models import registry

    for name in registry.names():
        registry.model_class(name)
    return keras.models.load_model(path, safe_mode=True, compile=False)


def split_runs(parent: str | os.PathLike) -> dict[int, Run]:
    """``{split seed: Run}`` of the ``split_<seed>`` runs in ``parent``
    (written by ``tfanomaly train --split-seeds``)."""
    out = {}
    for p in Path(parent).glob("split_*"):
        tail = p.name[len("split_") :]
        if p.is_dir() and tail.isdigit():
            out[int(tail)] = Run(p)
    return dict(sorted(out.items()))


def split_run(parent: str | os.PathLike, seed: int) -> Run:
    return Run(Path(parent) / f"split_{seed}")
