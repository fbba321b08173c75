"""Fixtures shared by the speechfm.ops tests: the compiled RNN-T extension and the backends."""

from __future__ import annotations

import pytest

from speechfm.ops._build import KernelBuildError, load_rnnt_extension


@pytest.fixture(scope="module")
def extension():
    """The C++ RNN-T extension, built on first use; skips the test on a host without a compiler."""
    try:
        return load_rnnt_extension()
    except KernelBuildError as e:
        if "no C++ compiler" in str(e):
            pytest.skip(str(e))
        raise


@pytest.fixture(params=["extension", "torch"])
def backend(request):
    """Each backend name in turn; "extension" only where the extension builds."""
    if request.param == "extension":
        request.getfixturevalue("extension")
    return request.param
