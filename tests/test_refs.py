"""References: parsing, formatting, the registry forms, and errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui.services.refs import (
    MAX_NAME,
    MAX_PART,
    MODEL_REGISTRY,
    ArtifactRef,
    RefError,
    format_ref,
    parse_ref,
)

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
names = st.text(NAME_CHARS, min_size=1, max_size=MAX_NAME)
parts = st.text(NAME_CHARS, min_size=1, max_size=MAX_PART)
refs = st.builds(
    lambda name, alias, project, entity: ArtifactRef(
        name=name, alias=alias, project=project, entity=entity if project else None
    ),
    names,
    names,
    st.none() | parts,
    st.none() | parts,
)


@given(refs)
def test_parse_inverts_format(ref: ArtifactRef) -> None:
    assert parse_ref(format_ref(ref)) == ref


@given(refs)
def test_format_inverts_parse_on_valid_text(ref: ArtifactRef) -> None:
    text = format_ref(ref)
    assert format_ref(parse_ref(text)) == text


@given(st.text(max_size=300) | st.text(NAME_CHARS + ":/ \t", max_size=200))
def test_any_text_parses_or_raises_ref_error(text: str) -> None:
    try:
        ref = parse_ref(text)
    except RefError as err:
        assert str(err)
        assert "\n" not in str(err)
    else:
        assert format_ref(ref) == format_ref(parse_ref(format_ref(ref)))


@pytest.mark.parametrize(
    ("text", "entity", "project", "name", "alias"),
    [
        ("team/models/my-model:production", "team", "models", "my-model", "production"),
        ("models/my-model:v3", None, "models", "my-model", "v3"),
        ("my-model:best", None, None, "my-model", "best"),
        ("my-model", None, None, "my-model", "latest"),
        (
            "wandb-registry-model/llama:candidate",
            None,
            "wandb-registry-model",
            "llama",
            "candidate",
        ),
        ("org/wandb-registry-evals/arc:latest", "org", "wandb-registry-evals", "arc", "latest"),
        ("  spaced/name:v0  ", None, "spaced", "name", "v0"),
    ],
)
def test_forms(text, entity, project, name, alias) -> None:
    ref = parse_ref(text)
    assert (ref.entity, ref.project, ref.name, ref.alias) == (entity, project, name, alias)


def test_bare_name_means_the_model_registry() -> None:
    ref = parse_ref("my-model:production")
    assert ref.registry_project == MODEL_REGISTRY
    assert ref.is_registry
    assert ref.qualified() == "wandb-registry-model/my-model:production"
    assert not parse_ref("team/models/x:v1").is_registry


def test_a_registry_path_names_the_organisation_never_the_team() -> None:
    ref = parse_ref("my-model:production")
    assert ref.qualified("team") == "wandb-registry-model/my-model:production"
    assert ref.qualified("team", "acme") == "acme/wandb-registry-model/my-model:production"
    explicit = parse_ref("acme-org/wandb-registry-model/my-model:v3")
    assert explicit.qualified("team", "acme") == "acme-org/wandb-registry-model/my-model:v3"
    assert parse_ref("proj/x:v1").qualified("team", "acme") == "team/proj/x:v1"
    assert not parse_ref("team/models/x:v1").is_registry


def test_versions_and_local_twins() -> None:
    ref = parse_ref("team/models/my-model:v12")
    assert ref.version_index == 12
    assert parse_ref("m:production").version_index is None
    twin = ref.local_twin()
    assert str(twin) == "team/models/my-model-local:v12"
    assert twin.is_local_twin and not ref.is_local_twin
    assert twin.local_twin() == twin
    assert not parse_ref("-local:v1").is_local_twin
    assert str(ref.with_alias("best")) == "team/models/my-model:best"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty reference"),
        ("   ", "empty reference"),
        ("bad::ref", "more than one ':'"),
        ("a:b:c", "more than one ':'"),
        ("name:", "names no alias"),
        (":alias", "empty name"),
        ("/name:v1", "empty project"),
        ("team//name:v1", "empty project"),
        ("team/proj/:v1", "empty name"),
        ("a/b/c/d:v1", "4 path parts"),
        ("my model:v1", "' '"),
        ("model:pro duction", "' '"),
        ("m\u00e9:v1", "'\u00e9'"),
        ("x" * (MAX_NAME + 1), "limit is 128"),
        ("e/" + "p" * (MAX_PART + 1) + "/n", "limit is 64"),
    ],
)
def test_malformed(text: str, says: str) -> None:
    with pytest.raises(RefError, match=None) as err:
        parse_ref(text)
    assert says in str(err.value)


def test_non_text_is_a_ref_error() -> None:
    with pytest.raises(RefError, match="must be text"):
        parse_ref(None)  # type: ignore[arg-type]


def test_entity_without_project_is_refused() -> None:
    with pytest.raises(RefError, match="needs a project"):
        ArtifactRef(name="n", entity="e")
