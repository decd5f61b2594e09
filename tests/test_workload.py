"""The workload interface: registry, fingerprints, the import picture, and a broken workload's
errors and verdicts."""

import ast
import importlib.util
import math
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import stabilitykit
from stabilitykit import Arm, Evaluation, MetricSpec, SupervisedWorkload, Workload, run_arm
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.run_record import read_record
from stabilitykit.workload import (
    WorkloadError,
    available_workloads,
    fingerprint,
    fingerprint_sources,
    get_workload,
    register_workload,
)

SRC = Path(stabilitykit.__file__).parent
ENGINE = ["arm.py", "run.py", "replay.py", "stage.py", "plugin.py", "cli.py", "shard.py"]
ENGINE += ["cluster.py", "workload.py"]
ENGINE += ["cache.py", "train", "judge", "record", "report", "gate"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("part", ENGINE)
def test_the_engine_imports_no_workload_and_no_model(part):
    target = SRC / part
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    for path in files:
        bad = {
            m
            for m in _imports(path)
            if m.startswith(("stabilitykit.workloads", "stabilitykit.models"))
        }
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


class Shift(SupervisedWorkload):
    """y = 2 * x shifted one column: a 3x3 convolution learns it."""

    name = "test_shift"

    def arrays(self, spec):
        x = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
        y = 2 * np.roll(x, 1, axis=-1)
        return {"x_train": x[:32], "y_train": y[:32], "x_test": x[32:], "y_test": y[32:]}

    def build_model(self, data, architecture, **kwargs):
        return nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")


ARM = Arm(name="shift", workload=Shift, epochs=30, lr=3e-2, batch_size=8, clip="norm")


@pytest.fixture
def run(tmp_path):
    def go(arm, **kw):
        return run_arm(arm, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", **kw)

    return go


def test_a_users_supervised_workload_learns_and_is_recorded(run):
    result = run(ARM)
    assert result.verdict.kind is VerdictKind.STABLE, result.verdict.explain()
    m = result.metrics
    assert m["rel_l2"] < 0.1 * m["rel_l2_floor"]
    config = read_record(result.run_dir).config
    assert config["workload"]["name"] == "test_shift"
    assert config["workload"]["primary_metric"] == "rel_l2"
    assert config["arm"]["workload_code"] == fingerprint(Shift)
    assert (result.run_dir / "reconstruction.npz").exists()


def test_registry_resolves_names_and_entry_points():
    assert {"gridlines", "darcy"} <= set(available_workloads())
    assert get_workload("darcy").name == "darcy"
    assert ARM.workload == "test_shift" and get_workload("test_shift").name == "test_shift"
    with pytest.raises(ValueError, match=r"workload: got 'nope'; allowed: one of \["):
        get_workload("nope")
    with pytest.raises(ValueError, match=r"Arm\.workload"):
        Arm(workload="nope")


def test_another_class_cannot_take_a_registered_name():
    class Impostor(Shift):
        pass

    with pytest.raises(ValueError, match="is taken by"):
        register_workload(Impostor)


def test_a_built_in_name_is_reserved_even_before_the_built_ins_load(monkeypatch):
    import stabilitykit.workload as registry

    class Gridlines(Shift):
        name = "gridlines"

    monkeypatch.setattr(registry, "_REGISTRY", {})  # as in a process that has loaded none
    with pytest.raises(
        ValueError,
        match=r"'gridlines' is reserved .*\(stabilitykit\.workloads\.gridlines\.workload\."
        r"GridLinesWorkload\); .*test_workload\..*Gridlines needs another name",
    ):
        register_workload(Gridlines)
    assert type(get_workload("gridlines")).__name__ == "GridLinesWorkload"


def test_arm_fields_are_checked_against_the_workload():
    with pytest.raises(
        ValueError, match=r"Arm.architecture: got 'hybrid'; allowed: one of \('fno',\)"
    ):
        Arm(workload="darcy", architecture="hybrid")
    with pytest.raises(ValueError, match=r"Arm.loss: got 'mae'.*'rel_l2'"):
        Arm(workload="darcy", loss="mae")
    with pytest.raises(ValueError, match=r"Arm\.data: .*a DarcySpec"):
        Arm(workload="darcy", data=get_workload("gridlines").default_spec())
    with pytest.raises(ValueError, match="modes"):
        Arm(workload="darcy", modes=43)  # 2 x 43 > 85
    assert Arm(workload="darcy").architecture == "fno"
    assert Arm.from_dict(Arm(workload="darcy").to_dict()).hash == Arm(workload="darcy").hash


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


USER_MODULE = """
import numpy as np
from torch import nn
from stabilitykit import SupervisedWorkload

class Mine(SupervisedWorkload):
    name = "{name}"

    def arrays(self, spec):
        x = np.ones((4, 1, 4, 4), np.float32)
        return {{"x_train": x, "y_train": x, "x_test": x, "y_test": x}}

    def build_model(self, data, architecture, **kwargs):
        return nn.Conv2d(1, 1, {kernel}, padding="same")
"""


def test_a_change_to_the_users_model_code_changes_the_arm_hash(tmp_path):
    path = tmp_path / "my_workload.py"
    path.write_text(USER_MODULE.format(name="fp_one", kernel=1))
    first = Arm(workload=_load(path, "fp_mod_one").Mine)
    path.write_text(USER_MODULE.format(name="fp_two", kernel=3))
    second = Arm(workload=_load(path, "fp_mod_two").Mine)
    assert first.to_dict()["workload_code"] != second.to_dict()["workload_code"]
    same = {k: v for k, v in first.to_dict().items() if k not in ("workload", "workload_code")}
    other = {k: v for k, v in second.to_dict().items() if k not in ("workload", "workload_code")}
    assert same == other and first.hash != second.hash


def test_the_fingerprint_does_not_depend_on_where_the_code_lives(tmp_path):
    """The same code in two folders (two clones, two machines) has one fingerprint; files of the
    standard library (the ABC below Workload) are not the workload's code."""
    prints = []
    for i, folder in enumerate([tmp_path / "a", tmp_path / "zz" / "deeper"]):
        folder.mkdir(parents=True)
        path = folder / "my_workload.py"
        path.write_text(USER_MODULE.format(name="fp_where", kernel=1))
        cls = _load(path, f"fp_where_{i}").Mine
        sources = fingerprint_sources(cls)
        assert {"Mine", "SupervisedWorkload", "relative_l2"} <= set(sources)
        assert not any("my_workload" in key or "abc" in key for key in sources)
        prints.append(fingerprint(cls))
    assert prints[0] == prints[1]
    builtin = fingerprint_sources(type(get_workload("gridlines")))
    assert "gridlines/workload.py" in builtin and "models/spectral.py" in builtin
    assert all(not Path(key).is_absolute() and str(SRC) not in key for key in builtin)
    assert not any(str(SRC) in code for code in builtin.values())


MODELS = """
import torch
from torch import nn

WIDTH = 4


def smooth(x):
    return torch.tanh(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, WIDTH, 3, padding=1)
        self.out = nn.Conv2d(WIDTH, 1, 1)

    def forward(self, x):
        return self.out(smooth(self.conv(x)))
"""

WORKLOAD = """
import numpy as np
from stabilitykit import SupervisedWorkload

{models}

class Mine(SupervisedWorkload):
    name = "fp_edits"

    def arrays(self, spec):
        x = np.ones((4, 1, 4, 4), np.float32)
        return {{"x_train": x, "y_train": x, "x_test": x, "y_test": x}}

    def build_model(self, data, architecture, **kwargs):
        return Net()
"""

#: Edits that change no number: comments, docstrings, formatting, and a test and an arm added.
SAME = {
    "comments and docstrings": [
        ("def smooth(x):\n", 'def smooth(x):\n    """Squash."""  # tanh\n'),
        ("class Net(nn.Module):\n", 'class Net(nn.Module):\n    "A net."\n\n    # layers\n'),
        ('    name = "fp_edits"', '    """Mine."""\n\n    name = "fp_edits"  # the registry name'),
    ],
    "formatting": [
        (
            "return self.out(smooth(self.conv(x)))",
            "return self.out(\n  smooth( self.conv( x ) ),\n)",
        ),
        ("nn.Conv2d(WIDTH, 1, 1)", "nn.Conv2d(\n WIDTH,\n 1,\n 1,\n)"),
        ('"fp_edits"', "'fp_edits'"),
    ],
    "a test and an arm added": [
        ("", "from stabilitykit import Arm\n\n"),
        (
            "        return Net()\n",
            "        return Net()\n\n\nARM = Arm(name='added', workload=Mine, lr=3e-3)\n\n\n"
            "def test_added():\n    assert ARM.lr == 3e-3\n",
        ),
        ("def smooth(x):", "def unused(x):\n    return x\n\n\ndef smooth(x):"),
    ],
}

#: Edits that change the numbers: a model's forward, a function or a constant it uses.
CHANGED = {
    "forward": ("return self.out(smooth(self.conv(x)))", "return self.out(self.conv(x))"),
    "a function forward calls": ("torch.tanh(x)", "torch.sigmoid(x)"),
    "a constant the model reads": ("WIDTH = 4", "WIDTH = 8"),
}


def _edited(text: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1) if old else new + text
    return text


def _fingerprint_of(folder: Path, models: str, workload: str, *, apart: bool) -> str:
    """The fingerprint of ``Mine`` with the model code in the workload's file or (``apart``) in a
    module of its own that the workload imports."""
    folder.mkdir(parents=True)
    if apart:
        (folder / "fp_models.py").write_text(models)
        _load(folder / "fp_models.py", "fp_models")
        text = workload.format(models="from fp_models import Net")
    else:
        text = workload.format(models=models)
    (folder / "test_mine.py").write_text(text)
    return fingerprint(_load(folder / "test_mine.py", "fp_edits_module").Mine)


@pytest.mark.parametrize("apart", [False, True], ids=["model in the file", "model imported"])
@pytest.mark.parametrize("edit", sorted(SAME))
def test_edits_that_change_no_number_keep_the_fingerprint(tmp_path, edit, apart):
    before = _fingerprint_of(tmp_path / "before", MODELS, WORKLOAD, apart=apart)
    models, workload = MODELS, WORKLOAD
    for old, new in SAME[edit]:
        if not old or old in WORKLOAD:  # old "": a line on top of the workload's file
            workload = _edited(workload, [(old, new)])
        else:
            models = _edited(models, [(old, new)])
    assert (models, workload) != (MODELS, WORKLOAD)
    assert _fingerprint_of(tmp_path / "after", models, workload, apart=apart) == before


@pytest.mark.parametrize("apart", [False, True], ids=["model in the file", "model imported"])
@pytest.mark.parametrize("edit", sorted(CHANGED))
def test_a_change_to_the_model_changes_the_fingerprint(tmp_path, edit, apart):
    before = _fingerprint_of(tmp_path / "before", MODELS, WORKLOAD, apart=apart)
    models = _edited(MODELS, [CHANGED[edit]])
    assert _fingerprint_of(tmp_path / "after", models, WORKLOAD, apart=apart) != before


def test_a_change_to_a_loss_changes_the_fingerprint(tmp_path):
    """SupervisedWorkload's losses are code of every workload built on it."""
    import stabilitykit.workloads.supervised as supervised

    sources = fingerprint_sources(Shift)
    assert {"Shift", "SupervisedWorkload", "relative_l2", "mse", "LOSSES"} <= set(sources)
    assert "test_a_change_to_a_loss_changes_the_fingerprint" not in sources
    assert "ARM" not in sources and "run" not in sources  # an arm and a fixture beside it
    text = Path(supervised.__file__).read_text()
    prints = []
    for i, edit in enumerate([("", ""), ("clamp_min(1e-12)", "clamp_min(1e-6)")]):
        path = tmp_path / f"copy_{i}" / "supervised.py"
        path.parent.mkdir()
        path.write_text(_edited(text, [edit]) if edit[0] else text)
        prints.append(fingerprint(_load(path, f"fp_supervised_{i}").SupervisedWorkload))
    assert prints[0] == fingerprint(supervised.SupervisedWorkload)  # a copy elsewhere: the same
    assert prints[1] != prints[0]


def test_a_class_made_at_run_time_is_fingerprinted_by_its_methods():
    """``type(name, (Shift,), {...})`` (an ABC subclass: its ``__module__`` reads ``abc``)."""

    def ones(self, spec):
        return np.ones(3)

    def zeros(self, spec):
        return np.zeros(3)

    made = [type("fp_made", (Shift,), {"name": "fp_made", "arrays": f}) for f in (ones, zeros)]
    sources = [fingerprint_sources(cls) for cls in made]
    assert {"fp_made.arrays", "Shift", "SupervisedWorkload"} <= set(sources[0])
    assert not any("abc" in key or key == "abstractmethod" for key in sources[0])
    assert fingerprint(made[0]) != fingerprint(made[1])


def test_the_committed_baselines_describe_the_code_as_it_is():
    """An edit of a built-in workload's code changes its arm hashes: the committed ci baselines
    must then be re-accepted (README, "Baselines and the CI gate"), or CI's gate fails."""
    import json

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines" / "ci"
    files = sorted(root.glob("*.json"))
    assert files
    for path in files:
        for key, entry in json.loads(path.read_text())["entries"].items():
            arm = entry["arm"]
            now = fingerprint(type(get_workload(arm["workload"])))
            assert arm["workload_code"] == now, f"{path.name} {key}: accepted with other code"


# --- a broken workload: errors before training, verdicts during it ----------------------------


def _broken(name, **methods):
    return register_workload(type(name, (Shift,), {"name": name, **methods}))


def test_wrong_data_shape_is_refused_before_training(run, tmp_path):
    def arrays(self, spec):
        x = np.zeros((8, 1, 4, 4), np.float32)
        return {"x_train": x, "y_train": x[:5], "x_test": x, "y_test": x}

    arm = ARM.replace(workload=_broken("bad_shapes", arrays=arrays))
    with pytest.raises(WorkloadError, match="workload 'bad_shapes', arrays: x_train has 8"):
        run(arm)
    assert not (tmp_path / "out").exists()


def test_values_beyond_float32_are_refused_by_name_and_never_cached(run, tmp_path):
    def arrays(self, spec):
        x = np.ones((8, 1, 4, 4))  # float64
        y = x.copy()
        y[3, 0, 1, 2] = 1e300  # finite in float64, inf in float32
        return {"x_train": x, "y_train": y, "x_test": x, "y_test": x}

    arm = ARM.replace(workload=_broken("too_large", arrays=arrays))
    message = r"arrays: y_train: value 1e\+300 at index \(3, 0, 1, 2\)"
    with pytest.raises(WorkloadError, match=message):
        run(arm)
    assert not list((tmp_path / "cache").glob("*.npz"))


def test_a_model_of_the_wrong_output_shape_is_an_error_verdict(run):
    def build_model(self, data, architecture, **kwargs):
        return nn.Conv2d(1, 2, 1)

    result = run(ARM.replace(workload=_broken("bad_model", build_model=build_model)))
    assert result.verdict.kind is VerdictKind.ERROR
    message = result.verdict.evidence[0].message
    assert "workload 'bad_model', build_model" in message and "(8, 2, 8, 8)" in message
    assert read_record(result.run_dir).complete
    assert result.stats["steps"] == 0  # found by the epoch-0 validation, before any step


def test_a_loss_that_is_not_a_scalar_is_an_error_verdict(run):
    def loss_fn(self, loss, data, device):
        return lambda model, batch: (model(batch[0]) - batch[1]) ** 2

    result = run(ARM.replace(workload=_broken("vector_loss", loss_fn=loss_fn)))
    assert result.verdict.kind is VerdictKind.ERROR
    assert "workload 'vector_loss', loss_fn: expected a 0-d" in result.verdict.evidence[0].message
    assert read_record(result.run_dir).complete


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"rel_l2": 0.1, "surprise": 1.0}, "metric 'surprise' has no declared direction"),
        ({"rel_l2": math.nan}, "metric 'rel_l2' is nan; expected a finite number"),
        ({"rel_l2": "0.1"}, "metric 'rel_l2' is '0.1'"),
    ],
)
def test_undeclared_or_non_finite_metrics_are_an_error_verdict(run, metrics, expected):
    def evaluate(self, model, data, tensors):
        return Evaluation(dict(metrics))

    name = f"bad_metrics_{abs(hash(expected)) % 10**6}"
    result = run(ARM.replace(epochs=1, workload=_broken(name, evaluate=evaluate)))
    assert result.verdict.kind is VerdictKind.ERROR
    assert expected in result.verdict.evidence[0].message
    record = read_record(result.run_dir)
    assert record.complete and record.load_state_dict()  # weights kept


def test_an_incomplete_workload_class_is_refused():
    class NoPrimary(Workload):
        name = "no_primary"
        architectures: ClassVar = {"m": {}}
        losses = ("l",)
        metrics = (MetricSpec("a", "lower"),)
        primary_metric = "b"

    with pytest.raises(TypeError, match="primary_metric 'b' is not in metrics"):
        register_workload(NoPrimary)
    with pytest.raises(ValueError, match=r"MetricSpec\('x'\).direction: got 'up'"):
        MetricSpec("x", "up")


def test_a_workload_names_its_mitigations_checked_recorded_and_outside_the_fingerprint():
    ls = ("LayerScale", {"architecture": "res", "layerscale_init": 1e-3})
    archs = {"mlp": {"width": 8}, "res": {"width": 8, "layerscale_init": None}}
    base = type("mit_base", (Shift,), {"name": "mit_base", "architectures": archs})
    advised = type("mit_advised", (base,), {"name": "mit_advised", "mitigations": (ls,)})
    block = advised().describe()
    assert block["mitigations"] == [{"text": "LayerScale", "changes": ls[1]}]
    assert block["architectures"] == archs
    plain = type("mit_advised", (base,), {"name": "mit_advised"})  # the same, unadvised
    assert fingerprint(advised) == fingerprint(plain)
    for bad, message in [
        ((("LayerScale", {"architecture": "vit"}),), "sets architecture 'vit'; allowed: one of"),
        ((("LayerScale", {"architecture": "mlp", "layerscale_init": 1}),), "'mlp' does not"),
        (("just text",), r"mitigations\[0\]: .*expected a Mitigation or a \(text, changes\)"),
    ]:
        cls = type("mit_bad", (base,), {"name": "mit_bad", "mitigations": bad})
        with pytest.raises(TypeError, match=message):
            register_workload(cls)


def test_tensors_and_metric_checks_name_what_is_wrong():
    from stabilitykit.workload import Tensors

    with pytest.raises(ValueError, match=r"Tensors\.train: every tensor needs the same number"):
        Tensors(train=(torch.zeros(3, 1), torch.zeros(2, 1)), test=(torch.zeros(1, 1),))
