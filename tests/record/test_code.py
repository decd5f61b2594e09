"""The code under test: git commit, dirty tree, package version; never an error."""

import shutil
import subprocess

import pytest

from stabilitykit.record.code import code_under_test, git_state, package_of
from stabilitykit.workloads.darcy import DarcyWorkload


def git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_and_dirty_of_a_checkout(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False, "root": str(tmp_path)}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path / "a.py")["dirty"] is True


def test_no_checkout_or_no_git_is_none(tmp_path, monkeypatch):
    empty = {"commit": None, "dirty": None, "root": None}
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_state(tmp_path) == empty
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_state(tmp_path) == empty


class LocalWorkload:
    """A class defined in a test file: from no installed package."""


def test_the_package_of_an_installed_workload_and_none_for_a_local_one():
    import stabilitykit

    assert package_of(DarcyWorkload) == {
        "name": "stabilitykit",
        "version": stabilitykit.__version__,
    }
    assert package_of(LocalWorkload) is None
    assert code_under_test(LocalWorkload)["package"] is None
