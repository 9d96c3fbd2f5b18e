"""Shared pytest setup: matplotlib (pulled in by tianshou) never opens a window."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")
