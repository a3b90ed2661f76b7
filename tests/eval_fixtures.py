"""Where the real eval-framework output folders are, for the tests that read them.

`shared/fixtures/eval-framework/` beside the repository is the source (see its README for
provenance). Without it the tests fall back to the copy in `tui/demo_data/eval-framework/`,
which holds the same `dev/` folders except `large/`; only what needs `large/` or the
peer records then skips.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "eval-framework"
DEMO_COPY = Path(__file__).resolve().parents[1] / "tui" / "demo_data" / "eval-framework"

# The output folders and the artifact names eval-framework computed for them: shared/'s,
# else the copy (where expected-artifacts.json lies inside, not beside, the folders).
if (SHARED / "dev").is_dir():
    DEV, EXPECTED_ARTIFACTS = SHARED / "dev", SHARED / "expected-artifacts.json"
else:
    DEV, EXPECTED_ARTIFACTS = DEMO_COPY, DEMO_COPY / "expected-artifacts.json"
# What eval-framework itself logged for the ARC folders: only in shared/.
PEER_RECORDS = SHARED / "peer-records"

HAS_LARGE = (DEV / "large").is_dir()
needs_large = pytest.mark.skipif(
    not HAS_LARGE,
    reason=f"the large/ fixture is only in {SHARED / 'dev'} (shared/ beside the repo)",
)


def peer_records(name: str) -> Path:
    """The peer records file `name`; skips the test when shared/ is not beside the repo."""
    path = PEER_RECORDS / name
    if not path.is_file():
        pytest.skip(f"eval-framework's own records are only in {PEER_RECORDS}")
    return path
