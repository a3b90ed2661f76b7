"""Where the demo registry lives and whether it is seeded, without the seeding code.

Opening the app on the demo checks the completion marker on every start; this module
keeps that check from importing the demo's plans and generators (`demo.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.services.settings import Settings

DEMO_VERSION = 1
MARKER_NAME = "demo-seed.json"


def default_demo_root(settings: Settings) -> Path:
    """EVALWB_REGISTRY_DIR when set, else `<data dir>/demo`."""
    return settings.evalwb_registry_dir or settings.paths.data / "demo"


def is_seeded(root: Path) -> bool:
    """True when a completed seed of this demo version is at `root`."""
    try:
        marker = json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("demo_version") == DEMO_VERSION and (root / "registry.sqlite").is_file()
