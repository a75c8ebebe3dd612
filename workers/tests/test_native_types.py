"""The native module's stub (``_native.pyi``) against the built module, so they cannot drift.

The closed sets (error codes, priorities) are defined once, by the Rust enums; the stub spells
them out as ``Literal`` types for type checkers. These tests read the stub's source and
compare each literal, in order, with what the module reports, and every name the stub
declares with what the module has.
"""

from __future__ import annotations

import ast
import sys
import typing
from pathlib import Path

import ferry_worker
import pytest
from ferry_worker import _native

STUB = Path(ferry_worker.__file__).with_name("_native.pyi")


def stub_module() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))


def literal_alias(name: str) -> tuple[str, ...]:
    """The strings of the stub's ``NAME: TypeAlias = Literal[...]``."""
    for node in stub_module().body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
        ):
            value = node.value
            assert isinstance(value, ast.Subscript), f"{name} is not a Literal[...]"
            assert isinstance(value.value, ast.Name) and value.value.id == "Literal"
            items = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
            strings = []
            for item in items:
                assert isinstance(item, ast.Constant) and isinstance(item.value, str)
                strings.append(item.value)
            return tuple(strings)
    raise AssertionError(f"the stub has no `{name}: TypeAlias = Literal[...]`")


@pytest.mark.parametrize(
    ("alias", "reported"),
    [("ErrorCode", _native.ERROR_CODES), ("Priority", _native.PRIORITIES)],
)
def test_stub_literals_list_what_the_module_reports(alias: str, reported: tuple[str, ...]) -> None:
    assert literal_alias(alias) == reported


def test_run_time_aliases_are_the_native_lists() -> None:
    assert typing.get_args(ferry_worker.ErrorCode) == _native.ERROR_CODES
    assert typing.get_args(ferry_worker.Priority) == _native.PRIORITIES
    assert ferry_worker.ERROR_CODES == frozenset(_native.ERROR_CODES)


def test_every_name_the_stub_declares_exists_and_none_is_missing() -> None:
    declared: set[str] = set()
    aliases: set[str] = set()
    for node in stub_module().body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            is_alias = isinstance(node.annotation, ast.Name) and node.annotation.id == "TypeAlias"
            (aliases if is_alias else declared).add(node.target.id)
    public = {name for name in dir(_native) if not name.startswith("_")}
    assert declared == public
    assert not aliases & public, "a type alias of the stub must not shadow a run-time name"


def test_every_member_the_stub_declares_on_a_class_exists() -> None:
    for node in stub_module().body:
        if not isinstance(node, ast.ClassDef):
            continue
        runtime = getattr(_native, node.name)
        for member in node.body:
            if isinstance(member, ast.FunctionDef):
                name = member.name
            elif isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
                name = member.target.id
            else:
                continue
            if name == "__buffer__" and sys.version_info < (3, 12):
                # The buffer protocol's Python-level name (PEP 688) exists from 3.12; the
                # stub declares it for type checkers, tests/test_raw.py uses the slot.
                continue
            assert hasattr(runtime, name), f"_native.{node.name} has no `{name}`"


def test_error_classes_come_from_the_native_module() -> None:
    for name in ("FerryError", "InvalidRequest", "Cancelled"):
        assert getattr(ferry_worker, name) is getattr(_native, name)
        assert getattr(ferry_worker.errors, name) is getattr(_native, name)
    assert issubclass(_native.InvalidRequest, ValueError)
    assert _native.InvalidRequest.default_code == "invalid_request"
    assert _native.Cancelled.default_code == "cancelled"
    assert _native.FerryError.default_code == "internal"
    assert ferry_worker.Request is _native.Request and ferry_worker.Reply is _native.Reply
