"""The emulator's own schema (`tests/wandb_emulator.graphql`) is a true subset of W&B's:
every type, field and argument in it exists with the same type in the public
reconstruction of W&B's schema in `../shared/wandb-schema/` (skipped where `../shared`
is absent). What the emulator does with an invalid document is in test_wandb_emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
)

from tests.wandb_emulator import SCHEMA_FILE

W_AND_B = Path(__file__).resolve().parents[1] / ".." / "shared" / "wandb-schema"
W_AND_B_FILE = W_AND_B / "schema-2022-plus-sdk031.graphql"


def _differences(name: str, ours: GraphQLNamedType, theirs: GraphQLSchema) -> list[str]:
    """What type `name` of our schema says that W&B's does not."""
    other = theirs.get_type(name)
    if other is None:
        return [f"type {name} is not W&B's"]
    if type(other) is not type(ours):
        return [f"{name} is a {type(other).__name__} on W&B"]
    problems: list[str] = []
    if isinstance(ours, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
        for field_name, field in ours.fields.items():
            where = f"{name}.{field_name}"
            their = other.fields.get(field_name)  # type: ignore[attr-defined]
            if their is None:
                problems.append(f"{where} is not W&B's")
                continue
            if str(their.type) != str(field.type):
                problems.append(f"{where} is {field.type}, on W&B {their.type}")
            for arg_name, arg in getattr(field, "args", {}).items():
                their_arg = their.args.get(arg_name)
                if their_arg is None:
                    problems.append(f"{where}({arg_name}:) is not W&B's")
                elif str(their_arg.type) != str(arg.type):
                    problems.append(f"{where}({arg_name}:) is {arg.type}, on W&B {their_arg.type}")
    if isinstance(ours, GraphQLObjectType | GraphQLInterfaceType):
        theirs_implement = {i.name for i in other.interfaces}  # type: ignore[attr-defined]
        problems += [
            f"{name} does not implement {i.name} on W&B"
            for i in ours.interfaces
            if i.name not in theirs_implement
        ]
    if isinstance(ours, GraphQLUnionType):
        members = {t.name for t in other.types}  # type: ignore[attr-defined]
        problems += [
            f"{t.name} is not in {name} on W&B" for t in ours.types if t.name not in members
        ]
    if isinstance(ours, GraphQLEnumType):
        problems += [f"{name}.{v} is not W&B's" for v in ours.values if v not in other.values]  # type: ignore[attr-defined]
    return problems


@pytest.mark.skipif(not W_AND_B_FILE.exists(), reason="../shared is absent")
def test_every_type_field_and_argument_of_the_emulators_schema_is_w_and_bs() -> None:
    ours = build_schema(SCHEMA_FILE.read_text())
    theirs = build_schema(W_AND_B_FILE.read_text())
    problems = [
        problem
        for name, named in ours.type_map.items()
        if not name.startswith("__")
        for problem in _differences(name, named, theirs)
    ]
    assert problems == []
    assert len(ours.type_map) > 50  # the check covered the schema, not an empty one


def test_the_check_finds_a_field_of_the_wrong_type() -> None:
    """The comparison can fail: a nullable field that W&B makes non-null is named."""
    ours = build_schema("type Query { a: A }  type A { name: String }")
    theirs = build_schema("type Query { a: A }  type A { name: String! }")
    assert _differences("A", ours.get_type("A"), theirs) == ["A.name is String, on W&B String!"]
