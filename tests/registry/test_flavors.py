"""The skops allow-list: classes from the estimator libraries pass; functions and other modules do not."""

from __future__ import annotations

import pytest

from bridgehead.registry.flavors import skops_type_allowed


@pytest.mark.parametrize(
    "name",
    [
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.log1p",  # a ufunc: pure arithmetic
        "scipy.sparse._csr.csr_matrix",
        "collections.OrderedDict",
        "builtins.dict",
        "builtins.slice",
    ],
)
def test_allowed(name: str) -> None:
    assert skops_type_allowed(name)


@pytest.mark.parametrize(
    "name",
    [
        "builtins.eval",
        "builtins.exec",
        "builtins.open",
        "builtins.__import__",
        "builtins.getattr",
        "numpy.load",
        "numpy.lib.npyio.load",
        "posix.system",
        "os.system",
        "subprocess.Popen",
        "sklearn.does_not_exist.Thing",
        "sklearn",
        "numpyx.evil",
    ],
)
def test_refused(name: str) -> None:
    assert not skops_type_allowed(name)
