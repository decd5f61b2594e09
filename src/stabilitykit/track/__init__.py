"""Experiment trackers: a run's record mirrored into TensorBoard or MLflow as it goes
(``run_arm(..., tensorboard=DIR, mlflow=URI)``, ``--sk-tensorboard``, ``--sk-mlflow``), and
records on disk sent afterwards (``stabilitykit export``). docs/trackers.md.

Each tracker is an optional extra: ``pip install 'stabilitykit[tensorboard]'`` or
``'stabilitykit[mlflow]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from stabilitykit.track.base import TrackedRun, Tracker, Trackers

__all__ = [
    "MissingExtraError",
    "TrackedRun",
    "Tracker",
    "Trackers",
    "check_available",
    "missing_extra",
    "trackers",
]


class MissingExtraError(ImportError):
    """A tracker's library is not installed; the message names the extra to install."""


def missing_extra(extra: str, tool: str, cause: BaseException) -> MissingExtraError:
    return MissingExtraError(
        f"{tool} is not installed ({cause}); install it with: pip install 'stabilitykit[{extra}]'"
    )


def check_available(tensorboard: bool, mlflow: bool) -> None:
    """:class:`MissingExtraError` naming the extra when an asked-for tracker's library is
    missing (at configure time, before any arm trains)."""
    if tensorboard:
        from stabilitykit.track.tensorboard import check_available as check

        check()
    if mlflow:
        from stabilitykit.track.mlflow import check_available as check

        check()


def trackers(
    tensorboard: str | os.PathLike | None = None,
    mlflow: str | os.PathLike | None = None,
    more: Iterable[Tracker] = (),
) -> Trackers:
    """The trackers asked for: TensorBoard under the folder ``tensorboard``, MLflow at the
    tracking URI or folder ``mlflow`` (:func:`stabilitykit.track.mlflow.tracking_uri`), and
    ``more`` (any object with :class:`Tracker`'s methods). :class:`MissingExtraError` names
    the extra to install when a library is missing."""
    chosen: list[Tracker] = []
    if tensorboard is not None:
        from stabilitykit.track.tensorboard import TensorBoardTracker

        chosen.append(TensorBoardTracker(tensorboard))
    if mlflow is not None:
        from stabilitykit.track.mlflow import MlflowTracker

        chosen.append(MlflowTracker(mlflow))
    chosen += list(more)
    for tracker in chosen:
        if not isinstance(tracker, Tracker):
            raise TypeError(f"trackers: {tracker!r} lacks a Tracker's methods ({Tracker.__doc__})")
    return Trackers(chosen)
