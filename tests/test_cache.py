"""The content-addressed data cache: a built set that fails validation is never stored."""

import numpy as np
import pytest

from stabilitykit.cache import load_or_build, read_npz


def _finite(path):
    arrays = read_npz(path)
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise ValueError(f"{path.name}: not finite")
    return arrays


def test_a_built_set_that_fails_to_load_is_not_cached(tmp_path):
    def bad():
        return {"x": np.array([1.0, np.inf])}

    with pytest.raises(ValueError, match="not finite"):
        load_or_build("k", bad, tmp_path, load=_finite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.lock"]  # no .npz, no temp file

    good = load_or_build("k", lambda: {"x": np.ones(2)}, tmp_path, load=_finite)
    assert good["x"].tolist() == [1.0, 1.0] and (tmp_path / "k.npz").exists()
