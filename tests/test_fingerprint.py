"""Normalised code: comments, docstrings and formatting do not count; code does."""

import pytest

from stabilitykit.fingerprint import digest, normalized, source_files
from stabilitykit.run import NUMERIC_CODE, code_fingerprint

CODE = '''
"""A module."""
SCALE = 2.0


def f(x, *, k=3):
    """Scale ``x``."""
    return SCALE * x + k  # the offset


class A:
    "A class."

    width: int = 4
    """The width."""

    def g(self):
        "Only a docstring."
'''


@pytest.mark.parametrize(
    "variant",
    [
        CODE.replace("# the offset", "# another comment"),
        CODE.replace('"""Scale ``x``."""', '"""Other words."""'),
        CODE.replace('    """Scale ``x``."""\n', ""),
        CODE.replace('    """The width."""\n', ""),
        CODE.replace('"Only a docstring."', "pass"),
        CODE.replace("SCALE * x + k", "(SCALE*x\n            + k)").replace("k=3", "k = 3"),
        CODE.replace('"A class."', "'A class, other words'") + "\n\n# trailing\n",
    ],
)
def test_comments_docstrings_and_formatting_do_not_count(variant):
    assert variant != CODE
    assert normalized(variant) == normalized(CODE)


@pytest.mark.parametrize(
    "variant",
    [
        CODE.replace("SCALE = 2.0", "SCALE = 2.5"),
        CODE.replace("SCALE * x + k", "SCALE * x - k"),
        CODE.replace("k=3", "k=4"),
        CODE.replace("width: int = 4", "width: int = 5"),
        CODE.replace('"Only a docstring."', "return 1"),
    ],
)
def test_a_change_to_the_code_counts(variant):
    assert normalized(variant) != normalized(CODE)


def test_the_text_has_no_positions_and_no_empty_fields():
    """No line numbers; no ``type_params=[]``, which ``ast.dump`` shows before Python 3.13 only."""
    text = normalized(CODE)
    assert "lineno" not in text and "col_offset" not in text
    assert "=[]" not in text and "=None" not in text


def test_the_engine_fingerprint_ignores_comments(tmp_path):
    for name, code in [("a", CODE), ("b", CODE.replace("# the offset", "# moved"))]:
        (tmp_path / name / "train").mkdir(parents=True)
        (tmp_path / name / "run.py").write_text(code)
        (tmp_path / name / "train" / "loop.py").write_text("x = 1\n")
    a, b = (source_files(tmp_path / n, ["run.py", "train"]) for n in "ab")
    assert set(a) == {"run.py", "train/loop.py"}
    assert digest(a) == digest(b)
    (tmp_path / "b" / "train" / "loop.py").write_text("x = 2\n")
    assert digest(source_files(tmp_path / "b", ["run.py", "train"])) != digest(a)
    assert len(code_fingerprint()) == 16 and "train" in NUMERIC_CODE
