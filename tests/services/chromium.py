"""Headless Chromium for the MLflow UI screenshots (tests/test_ui_screenshots.py): detected, never installed."""

from __future__ import annotations

from lib.screenshots import find_chromium
from services import install_first


def why_not_available() -> str | None:
    """None when a Chromium binary is on PATH, else the reason in one line."""
    return None if find_chromium() else install_first("Chromium")
