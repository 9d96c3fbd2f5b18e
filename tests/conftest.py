"""Shared pytest setup. Numba's JIT is off in tests: compiling costs more than the tiny test inputs save."""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
