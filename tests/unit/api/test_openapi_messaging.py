"""The document's parts for apps talking to each other come from the classes and constants
the server uses (issue 15)."""

from __future__ import annotations

import attrs

from orchestratr.api import openapi
from orchestratr.api.wire import EventBody, MessageBody
from orchestratr.convert import field_keys
from orchestratr.registry.model import ServiceSpec
from orchestratr.registry.validate import MAX_PORT, MAX_SERVICE_NAME, SERVICE_TYPE_PATTERN
from orchestratr.supervisor.bus import PUBLISHED_TYPE
from orchestratr.supervisor.services import ServiceRecord

DOC = openapi.document()
SCHEMAS = DOC["components"]["schemas"]


def test_bodies_are_their_classes() -> None:
    assert list(SCHEMAS["EventBody"]["properties"]) == [f.name for f in attrs.fields(EventBody)]
    assert list(SCHEMAS["MessageBody"]["properties"]) == list(field_keys(MessageBody))
    assert "from" in SCHEMAS["MessageBody"]["properties"]
    assert list(SCHEMAS["ServiceRecord"]["properties"]) == [
        f.name for f in attrs.fields(ServiceRecord)]


def test_service_limits_are_validations() -> None:
    service = SCHEMAS["Service"]
    assert list(service["properties"]) == [f.name for f in attrs.fields(ServiceSpec)]
    assert service["properties"]["port"]["maximum"] == MAX_PORT
    assert service["properties"]["name"]["maxLength"] == MAX_SERVICE_NAME
    assert service["properties"]["type"]["pattern"] == SERVICE_TYPE_PATTERN.pattern
    assert SCHEMAS["Event"]["properties"]["type"]["pattern"] == PUBLISHED_TYPE.pattern


def test_every_new_path_is_documented() -> None:
    paths = DOC["paths"]
    assert paths["/events"]["post"]["responses"]["202"]
    assert paths["/apps/{name}/message"]["post"]["responses"]["202"]
    inbox = paths["/apps/{name}/messages"]["get"]["responses"]["200"]["content"]
    assert set(inbox) == {"application/json", "text/event-stream"}
    assert {"get", "put"} <= set(paths["/apps/{name}/services"])
    for path in ("/services", "/services/resolve", "/services/browse"):
        assert "get" in paths[path]
