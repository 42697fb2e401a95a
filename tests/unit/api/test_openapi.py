"""The OpenAPI document is built from the classes and constants it describes: a field added to
a model, or a limit changed, shows in the document without an edit of its own."""

from __future__ import annotations

import attrs
import pytest

from orchestratr.api import openapi
from orchestratr.api.server import MAX_BODY
from orchestratr.api.transport import Limits
from orchestratr.api.wire import MAX_DEPTH, AppStatus
from orchestratr.controls import HotkeyStatus
from orchestratr.registry.model import APP_FIELDS, AppSpec
from orchestratr.registry.validate import MAX_LEASE_S
from orchestratr.supervisor.states import AppState

SCHEMAS = openapi.document()["components"]["schemas"]


def test_every_manifest_field_is_in_the_app_and_registration_schemas() -> None:
    assert set(APP_FIELDS) <= set(SCHEMAS["App"]["properties"])
    assert set(SCHEMAS["Registration"]["properties"]) == set(APP_FIELDS)


def test_the_app_schema_is_the_spec_then_the_live_status() -> None:
    spec = [f.alias for f in attrs.fields(AppSpec)]
    live = [f.name for f in attrs.fields(AppStatus)]
    assert list(SCHEMAS["App"]["properties"]) == spec + live
    assert SCHEMAS["App"]["required"] == spec + live


def test_a_new_spec_field_appears_in_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema follows the class: a field the class gains is documented at once."""
    @attrs.frozen
    class Grown(AppSpec):
        icon: str | None = None

    monkeypatch.setattr(openapi, "AppSpec", Grown)
    assert "icon" in openapi._app_properties()


def test_field_types_and_limits_come_from_the_code() -> None:
    properties = SCHEMAS["App"]["properties"]
    assert properties["restart"]["enum"] == ["never", "on-failure", "always"]
    assert properties["state"]["enum"] == [state.value for state in AppState]
    lease = properties["lease_secs"]["anyOf"][0]
    assert (lease["type"], lease["maximum"]) == ("number", MAX_LEASE_S)
    assert properties["launched_at"]["anyOf"][0]["format"] == "date-time"


def test_the_hotkey_schema_is_the_status_class() -> None:
    assert list(SCHEMAS["Hotkeys"]["properties"]) == [f.name for f in attrs.fields(HotkeyStatus)]


def test_limits_in_prose_are_the_constants() -> None:
    """The error descriptions quote the limits the server enforces, from their constants."""
    text = str(openapi.document())
    limits = Limits()
    assert f"within {limits.body_s:g} s" in openapi.ERROR_TEXT[408]
    assert f"over {MAX_BODY // 1024 // 1024} MiB" in openapi.ERROR_TEXT[413]
    assert f"over {limits.connections}" in openapi.ERROR_TEXT[503]
    assert f"nested over {MAX_DEPTH} deep" in openapi.ERROR_TEXT[400]
    assert "lease_secs" in text


def test_every_operation_lists_what_the_transport_may_answer() -> None:
    """408, 414, 431, 501 and 505 come from the transport before any endpoint; a generated
    client learns them from each operation (501 was in the prose only: an audit)."""
    document = openapi.document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                assert {"408", "414", "431", "501", "505"} <= set(operation["responses"]), (
                    method, path)
