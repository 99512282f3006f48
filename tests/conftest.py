"""Shared test configuration. batchq's own pytest plugin is loaded by its entry point, not here."""

from __future__ import annotations

# pytester runs small user projects in tests/test_pytest_plugin.py.
pytest_plugins = ["pytester"]
