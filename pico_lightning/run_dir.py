"""The run directory: what `pico train` writes where, what each file means, and who may write it.

A run directory is ``run.dir/run.name``; :class:`RunDir` is its one type, used by training, evaluation, export,
sweeps, reports and W&B. The order in which a fit writes these files is told in pico_lightning/training/lifecycle.py.

    config.yaml            the resolved experiment, written when the fit starts: from then on the directory is a run
    metrics.jsonl          one JSON object per logged step (``step`` and every logged scalar, e.g. ``train/loss``);
                           cut back to the checkpoint's step when a run resumes
    checkpoints/           LoRA + optimizer + loop state, never the frozen base, written atomically:
        last.ckpt          the newest (every train.checkpoint_every steps, on a stop signal, at the last step)
        step-NNNNNN.ckpt   the latest periodic save
        best.ckpt          the best eval/score so far (when evaluation runs during training)
    eval/step_<N>/         each evaluation's metrics.json and gallery.png; eval/final/ is `pico eval RUN`'s default
    eval/wandb/            the W&B evaluation runs of `pico eval RUN`, one new run per evaluation
    lora/                  the LoRA in diffusers format with its README.md model card, written at the end of the fit
    summary.json           written last: {"status": "finished", "step", "eval", "lora", "checkpoint"}; a run is
                           finished exactly when it holds status "finished" (:meth:`RunDir.is_finished`)
    wandb/, wandb_id       W&B's own directory, and the W&B run id kept with the directory (a moved run keeps its
                           W&B run, a resumed one continues it; `pico eval RUN`'s runs name it)
    wandb_steps.json       per metric key, the highest step already sent to W&B (no step logged twice)
    .lock                  "host pid" of the process training the run (:class:`RunLock`)
    hpc_ckpt_*.ckpt        left by older runs under Lightning's SLURM auto-requeue; still resumed from, then removed

Shell scripts ask whether a run is finished with ``python -m pico_lightning.run_dir is-finished RUN_DIR`` (exit 0
when finished, else 1), so "finished" has one definition.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pico_lightning.errors import UserError
from pico_lightning.files import write_json, write_text

STEP_CHECKPOINT = "step-{step:06d}"  # ModelCheckpoint's filename of the periodic saves (checkpoints/step-*.ckpt)
BEST_CHECKPOINT = "best"
FINISHED = "finished"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    """One run directory: its paths (see the module doc), whether it is finished, its summary, W&B id and lock."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str is welcome; the field is always a Path

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        """``path`` as a run directory `pico train` wrote (one holding config.yaml); a one-line UserError else."""
        run, expected = cls(path), "expected the directory `pico train` writes"
        if not run.path.is_dir():
            raise UserError(f"{run.path}: not a run directory (no such directory; {expected})")
        if not run.config.is_file():
            raise UserError(f"{run.path}: not a run directory (no config.yaml; {expected})")
        return run

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    def step_checkpoints(self) -> list[Path]:
        return list(self.checkpoints.glob("step-*.ckpt"))

    def hpc_checkpoints(self) -> list[Path]:
        return list(self.path.glob("hpc_ckpt_*.ckpt"))

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def eval_metrics(self, step: int) -> Path:
        return self.eval_dir / f"step_{step}" / "metrics.json"

    def eval_gallery(self, step: int) -> Path:
        return self.eval_dir / f"step_{step}" / "gallery.png"

    def evaluated_steps(self) -> list[int]:
        """The steps with an evaluation on disk (eval/step_<N>/metrics.json), ascending."""
        names = (path.parent.name.removeprefix("step_") for path in self.eval_dir.glob("step_*/metrics.json"))
        return sorted(int(name) for name in names if name.isdigit())

    @property
    def final_eval(self) -> Path:
        return self.eval_dir / "final"

    @property
    def lora(self) -> Path:
        return self.path / "lora"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def wandb_steps(self) -> Path:
        return self.path / "wandb_steps.json"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def is_finished(self) -> bool:
        """Whether `pico train` ended this run: summary.json says so (an unreadable one does not)."""
        try:
            summary = self.read_summary()
        except UserError:
            return False
        return summary is not None and summary.get("status") == FINISHED

    def read_summary(self) -> dict | None:
        """summary.json, or None when the run has none; an unreadable one is a one-line UserError."""
        if not self.summary.is_file():
            return None
        try:
            summary = json.loads(self.summary.read_text())
        except (OSError, ValueError) as err:
            again = "`pico train` with run.resume=auto writes it again"
            raise UserError(f"{self.summary}: unreadable run summary ({err}); {again}") from None
        if not isinstance(summary, dict):
            raise UserError(f"{self.summary}: not a run summary (expected a JSON object)")
        return summary

    def write_summary(self, step: int, evaluation: Mapping[str, float]) -> dict:
        """summary.json, which makes the run finished: its final step and evaluation, where its LoRA and last
        checkpoint are. Returns what it wrote."""
        summary = {
            "status": FINISHED,
            "step": step,
            "eval": {k: float(v) for k, v in evaluation.items()},
            "lora": str(self.lora),
            "checkpoint": str(self.last_checkpoint),
        }
        write_json(self.summary, summary)
        return summary

    def wandb_id(self, create: bool) -> str | None:
        """The W&B run id kept in ``wandb_id``; with ``create``, one is written when there is none: the id of the
        W&B run ``wandb/`` already holds, else a new one. Only one process may create it (global rank zero): two
        writers could leave an id that the W&B run does not have."""
        path = self.path / "wandb_id"
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        if not create:
            return None
        new = self._id_in_wandb_dir() or uuid.uuid4().hex[:12]  # wandb 0.31 keeps its generator private
        write_text(path, new + "\n")
        return new

    def _id_in_wandb_dir(self) -> str | None:
        """The id of the newest W&B run in ``wandb/`` (``[offline-]run-<time>-<id>``), so a directory trained before
        ``wandb_id`` existed (its id was a hash of its path) keeps continuing its W&B run."""
        found = sorted(self.path.glob("wandb/*run-*-*"), key=lambda path: path.name.split("run-", 1)[1])
        return found[-1].name.rsplit("-", 1)[1] if found else None

    def lock(self) -> RunLock:
        return RunLock(self)


class RunLock:
    """``with run.lock():`` one process at a time per run directory, for the whole fit; else one UserError line.

    Two ``pico train`` on the same ``run.name`` would interleave metrics.jsonl, write ``last-v1.ckpt`` and open two
    W&B runs with one id. The launching process (global rank zero) takes ``.lock`` with ``flock``; the kernel drops
    it when the process exits, even on SIGKILL, so a killed run can be resumed at once. Where the filesystem has no
    ``flock`` (some Lustre and NFS mounts) the lock is the file itself, created exclusively and removed at the end,
    with one warning line; such a lock left by a dead process on this host is taken over, with a line that says so.
    Either way ``.lock`` holds "host pid" of its holder.

    A refused run leaves nothing behind: when the fit fails before it started (no config.yaml written yet, e.g. a
    ``data.root`` that is a file), the lock removes the run directory again if it created it, and the parents it
    created with it, while still holding the lock.
    """

    def __init__(self, run: RunDir):
        self.run, self.path = run, run.lock_file
        self.handle: IO[str] | None = None
        self.exclusive = False  # no flock here: the lock is the file's existence
        self.created: list[Path] = []  # the run directory and its parents that this lock made, deepest first

    def __enter__(self) -> RunLock:
        missing = [d for d in (self.run.path, *self.run.path.parents) if not d.exists()]
        self.run.path.mkdir(parents=True, exist_ok=True)
        handle = self._acquire()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{socket.gethostname()} {os.getpid()}")
        handle.flush()
        self.handle, self.created = handle, missing
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.created and not self.run.config.exists():
            self._remove_created()
        if self.handle is None:
            return
        if self.exclusive:
            self.path.unlink(missing_ok=True)
        else:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None

    def _acquire(self) -> IO[str]:
        """The lock file, held: by ``flock``, else (no flock on this filesystem) by having created it."""
        handle, created = self._open()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            owner = handle.read()
            handle.close()
            raise self._in_use(owner) from None
        except OSError as err:  # ENOLCK, EOPNOTSUPP, ENOSYS...: the filesystem has no flock
            log.warning(
                "%s: no flock on this filesystem (%s); the lock is the file itself, removed when the run ends",
                self.path,
                err.strerror or err,
            )
            self.exclusive = True
        if created:
            return handle
        owner = handle.read()
        handle.close()
        return self._take_over(owner)

    def _open(self) -> tuple[IO[str], bool]:
        """The lock file opened for reading and writing, and whether this call created it."""
        while True:
            try:
                return os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), "r+"), True
            except FileExistsError:
                pass
            try:
                return open(self.path, "r+"), False  # noqa: SIM115 (held open for the whole run)
            except FileNotFoundError:  # its holder removed it meanwhile (no flock): create it
                continue

    def _take_over(self, owner: str) -> IO[str]:
        """Without flock, a lock file that exists is held, unless its holder is a dead process on this host."""
        host, pid = _holder(owner)
        if host != socket.gethostname() or pid is None or _alive(pid):
            raise self._in_use(owner)
        log.warning("%s: taking over the lock of pid %d on %s, which is no longer running", self.path, pid, host)
        self.path.unlink(missing_ok=True)
        try:
            return os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), "r+")
        except FileExistsError:  # another process took it over first
            raise self._in_use(self.path.read_text()) from None

    def _in_use(self, owner: str) -> UserError:
        host, pid = _holder(owner)
        holder = f"pid {pid} on {host}" if pid is not None else "another process"
        gone = f" (if that process is gone, remove {self.path})" if self.exclusive else ""
        return UserError(
            f"{self.run.path}: run in use by {holder}; wait for it to finish or choose another run.name{gone}"
        )

    def _remove_created(self) -> None:
        """Remove the run directory this lock made (the fit never started) and the empty parents made with it."""
        shutil.rmtree(self.created[0], ignore_errors=True)
        for parent in self.created[1:]:
            try:
                parent.rmdir()
            except OSError:  # something else was put there meanwhile: keep it
                break


def _holder(owner: str) -> tuple[str, int | None]:
    """(host, pid) from a lock file's "host pid"; pid None when it names no process (empty, or being written)."""
    fields = owner.split()
    if len(fields) == 2 and fields[1].isdigit() and int(fields[1]) > 0:
        return fields[0], int(fields[1])
    return "?", None


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m pico_lightning.run_dir is-finished RUN_DIR``: exit 0 when the run is finished, else 1."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "is-finished":
        print("usage: python -m pico_lightning.run_dir is-finished RUN_DIR", file=sys.stderr)
        return 2
    return 0 if RunDir(argv[1]).is_finished() else 1


if __name__ == "__main__":
    sys.exit(main())
