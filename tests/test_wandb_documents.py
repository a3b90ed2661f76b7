"""The app's own GraphQL documents validate against the public reconstruction of W&B's
schema in `../shared/wandb-schema/` (skipped where `../shared` is absent), with and
without the fields a server may lack."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from tui.services.registry import wandb as backend

SCHEMA = Path(__file__).resolve().parents[1] / ".." / "shared" / "wandb-schema"
SCHEMA_FILE = SCHEMA / "schema-2022-plus-sdk031.graphql"

pytestmark = pytest.mark.skipif(not SCHEMA_FILE.exists(), reason="../shared is absent")

DOCUMENTS = {
    "ArtifactLineage": backend.LINEAGE_GQL,
    "ArtifactLineages": backend._lineages_query(3),
    "RunsOutputArtifacts": backend._outputs_query(3),
    "IsProjectReadOnly": backend.READ_ONLY_GQL,
}


@pytest.fixture(scope="module")
def schema():
    return build_schema(SCHEMA_FILE.read_text())


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_the_apps_documents_validate_against_w_and_bs_schema(schema, name) -> None:
    assert validate(schema, parse(DOCUMENTS[name])) == []


def test_a_document_with_a_wrong_argument_does_not(schema) -> None:
    """The check can fail: a document W&B would refuse is refused here too."""
    broken = backend.READ_ONLY_GQL.replace("entityName: $entity", "entity: $entity")
    assert validate(schema, parse(broken)) != []
