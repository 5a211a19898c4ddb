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
