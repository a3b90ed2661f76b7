"""The service layer never imports Textual, and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import tui.services as services
names = [m.name for m in pkgutil.walk_packages(services.__path__, "tui.services.")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
print(len(names))
print(",".join(bad))
print("wandb" in sys.modules)
"""


def test_services_do_not_import_textual() -> None:
    # A fresh interpreter: this test process may have imported textual already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert int(out[0]) >= 4, "the walk found too few modules to mean anything"
    assert out[1] == "", f"tui.services imports textual: {out[1]}"
    assert out[2] == "False", "importing tui.services must not import wandb (it is lazy)"
