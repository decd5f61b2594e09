"""Epoch checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint holds the model, the optimiser, the lr scheduler, the shuffle generator, the global
RNG states (torch, CUDA, numpy, Python), the step and epoch reached, the per-epoch history, the
spike detector's state, and the arm hash and code fingerprint that produced it. It is written
atomically (a temporary file renamed into place), so a kill at any moment leaves either the
previous checkpoint or the new one, never half of one; it is read back with
``torch.load(weights_only=True)``: plain tensors and containers, no pickled code.

The file is a one-line header (``MAGIC``, the format version, the sha256 of the rest) followed
by ``torch.save``'s bytes: a file cut short or with flipped bytes fails the checksum and is
refused by name before torch reads a byte of it.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "stabilitykit.checkpoint"
VERSION = 2  # 2: a checksummed header
MAGIC = b"stabilitykit-checkpoint"
_HEADER = len(MAGIC) + len(b" 2 sha256 ") + 64 + 1  # ... <64 hex>\n
_CHUNK = 1 << 20
KEYS = (
    "format",
    "version",
    "arm_hash",
    "code_fingerprint",
    "epoch",
    "step",
    "model",
    "optimizer",
    "scheduler",
    "generator",
    "rng",
    "history",
    "telemetry",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and what is wrong."""


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states a workload's loss or model may draw from."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss_next))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _header(digest: str) -> bytes:
    return MAGIC + f" {VERSION} sha256 {digest}\n".encode()


def save_checkpoint(path: Path, state: dict[str, Any]) -> int:
    """Write ``state`` to ``path`` atomically, behind a header with the payload's sha256;
    returns the file's size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w+b") as f:
        f.write(_header("0" * 64))  # a placeholder of the same length
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)
        f.seek(_HEADER)
        digest = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
        f.seek(0)
        f.write(_header(digest.hexdigest()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def read_payload(path: Path) -> bytes:
    """The payload of the checkpoint at ``path`` once its checksum holds; else
    :class:`CheckpointError` naming the file and what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    head, payload = data[:_HEADER], data[_HEADER:]
    parts = head.rstrip(b"\n").split(b" ")
    if len(parts) != 4 or parts[0] != MAGIC or parts[2] != b"sha256" or head[-1:] != b"\n":
        raise CheckpointError(
            f"{path}: not a readable checkpoint (no stabilitykit checkpoint header; "
            f"written by a stabilitykit before checkpoint version {VERSION}, or not one)"
        )
    if parts[1] != str(VERSION).encode():
        raise CheckpointError(
            f"{path}: checkpoint version {parts[1].decode(errors='replace')}; this stabilitykit "
            f"reads version {VERSION}"
        )
    if hashlib.sha256(payload).hexdigest().encode() != parts[3]:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (checksum mismatch: the file is cut short or "
            f"corrupt; {len(data)} bytes)"
        )
    return payload


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint read back (weights only) once its checksum holds; :class:`CheckpointError`
    naming the file when it is unreadable, corrupt, foreign, of another version or incomplete."""
    path = Path(path)
    payload = read_payload(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign payload: torch raises many kinds
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stabilitykit checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')!r}; this stabilitykit reads "
            f"version {VERSION}"
        )
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return state


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the checkpoints in ``folder``, oldest first (temporaries left out)."""
    out = []
    if Path(folder).is_dir():
        for path in Path(folder).glob("epoch-*.pt"):
            try:
                out.append((int(path.stem.split("-")[1]), path))
            except (IndexError, ValueError):
                continue
    return sorted(out)


def _to_cpu(x: Any) -> Any:
    """A copy of ``x`` with every tensor on the CPU (containers rebuilt, other values kept)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


class CheckpointWriter:
    """Writes a run's epoch checkpoints to ``folder()`` (``epoch-NNNN.pt``), keeping only the
    newest unless ``keep``.

    ``background``: the state is copied to the CPU at once (the numbers are those of the epoch's
    end) and written by a thread while training goes on, so a fast accelerator does not wait for
    the disk (the full-scale deep control's checkpoint is about 500 MiB). A kill during a write
    leaves the previous checkpoint in place. On the CPU the write is synchronous: a kill just
    after an epoch then always finds that epoch's checkpoint. :meth:`close` waits for the last
    write; a write that failed raises there (or at the next write), naming the file."""

    def __init__(self, folder: Any, *, keep: bool = False, background: bool = False) -> None:
        self.folder = folder  # a callable: the run folder may still be renamed
        self.keep = keep
        self.background = background
        self.bytes: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, state: dict[str, Any]) -> None:
        self.wait()
        path = Path(self.folder()) / checkpoint_name(int(state["epoch"]))
        if not self.background:
            self._save(path, state)
            return
        snapshot = _to_cpu(state)
        self._thread = threading.Thread(
            target=self._save, args=(path, snapshot), name="stabilitykit-checkpoint", daemon=True
        )
        self._thread.start()

    def _save(self, path: Path, state: dict[str, Any]) -> None:
        try:
            self.bytes = save_checkpoint(path, state)
            if not self.keep:
                for _, old in list_checkpoints(path.parent):
                    if old != path:
                        old.unlink(missing_ok=True)
        except BaseException as exc:  # reported by wait(), in the training thread
            if not self.background:
                raise
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise OSError(f"writing a checkpoint failed: {error}") from error

    def close(self) -> None:
        self.wait()
