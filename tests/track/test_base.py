"""The fan-out: a tracker that fails costs the run nothing; a missing extra is named."""

import sys

import pytest

from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.track import MissingExtraError, trackers

from .conftest import STEPS


class Recording:
    """A tracker that keeps what it is sent; ``fail_in`` names a call that raises."""

    name = "recording"

    def __init__(self, fail_in=None):
        self.fail_in, self.calls, self.seen = fail_in, [], []

    def _maybe_fail(self, call):
        self.calls.append(call)
        if call == self.fail_in:
            raise OSError(28, "No space left on device")

    def start(self, run):
        self._maybe_fail("start")

    def steps(self, rows):
        self._maybe_fail("steps")
        self.seen += [r["step"] for r in rows]

    def layers(self, names, rows):
        self._maybe_fail("layers")

    def epoch(self, row, step):
        self._maybe_fail("epoch")

    def finish(self, record):
        self._maybe_fail("finish")

    def close(self):
        self.calls.append("close")


def test_a_failing_tracker_is_left_out_and_named_and_the_run_is_complete(run):
    broken, fine = Recording(fail_in="steps"), Recording()
    fine.name = "fine"
    with pytest.warns(UserWarning, match="recording failed in steps: OSError"):
        result = run(trackers=[broken, fine])
    assert result.stats["trackers"]["fine"] == "ok"
    assert result.stats["trackers"]["recording"].startswith("failed in steps: OSError")
    assert broken.calls == ["start", "epoch", "steps", "close"]  # epoch 0, then no more calls
    assert fine.seen == list(range(1, STEPS + 1)) and fine.calls[-1] == "close"
    record = result.record
    assert record.complete and record.stats["trackers"] == result.stats["trackers"]
    assert len(record.steps) == STEPS and record.verdict == result.verdict


def test_a_tracker_failing_at_the_end_is_named_in_the_record(run):
    with pytest.warns(UserWarning, match="failed in finish"):
        result = run(trackers=[Recording(fail_in="finish")])
    assert result.record.stats["trackers"]["recording"].startswith("failed in finish")


def test_an_unusable_mlflow_store_costs_the_run_nothing(run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "taken").write_text("")  # a file where the store's folder would be
    with pytest.warns(UserWarning, match="mlflow failed in start"):
        result = run(mlflow=(tmp_path / "taken" / "mlruns").as_uri())
    assert result.stats["trackers"]["mlflow"].startswith("failed in start")
    assert result.record.complete and result.verdict.kind is not VerdictKind.ERROR


@pytest.mark.parametrize(
    ("option", "module", "extra"),
    [("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow")],
)
def test_without_the_extra_the_message_names_it(monkeypatch, tmp_path, option, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, f"{module}.tracking", None)
    with pytest.raises(MissingExtraError, match=rf"pip install 'stabilitykit\[{extra}\]'"):
        trackers(**{option: tmp_path})
