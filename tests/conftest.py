"""Test-session settings.

``compile="auto"`` builds a missing kernel in a background process; on the CPU the eager
steps that stand in for it meanwhile give the same bits, so no test's numbers depend on
it. The suite turns those background builds off (``DESCENT_BUILD=0``) so that CI time is
spent on tests: kernels already in the cache are still used, ``compile=True`` still
builds what it needs, and ``tests/engine/test_cache.py`` runs the background path itself
in fresh processes with a cache of their own.
"""

import os

os.environ.setdefault("DESCENT_BUILD", "0")


import pytest  # noqa: E402


@pytest.fixture(params=["python", "native"])
def bookkeeping(request, monkeypatch):
    """The step's per-gradient bookkeeping done the Python way, then in C++
    (``descent.engine.native``): a test that takes this fixture runs both ways."""
    from descent.engine import native

    if request.param == "python":
        monkeypatch.setattr(native, "module", lambda: None)
        return request.param
    mod = native.build()
    if mod is None:
        if native.unavailable():
            pytest.skip(native.unavailable())
        pytest.fail(f"the C++ bookkeeping did not build: {native.why_not()}")
    monkeypatch.setattr(native, "module", lambda: mod)
    return request.param
