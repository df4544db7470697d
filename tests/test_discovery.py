from __future__ import annotations

from tests.conftest import ScimClient


def test_service_provider_config_is_true_to_the_server(scim: ScimClient) -> None:
    body = scim.get("/ServiceProviderConfig").get_json()
    assert body["patch"]["supported"] and body["bulk"]["supported"]
    assert body["bulk"]["maxOperations"] == 50  # the test app's setting
    assert body["filter"]["maxResults"] == 200
    assert body["etag"]["supported"] and body["sort"]["supported"]
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_resource_types_and_schemas(scim: ScimClient) -> None:
    types = scim.get("/ResourceTypes").get_json()
    assert {r["name"] for r in types["Resources"]} == {"User", "Group"}
    user_type = scim.get("/ResourceTypes/User").get_json()
    assert user_type["schemaExtensions"][0]["schema"].endswith("enterprise:2.0:User")
    schemas = scim.get("/Schemas").get_json()
    ids = {s["id"] for s in schemas["Resources"]}
    assert "urn:ietf:params:scim:schemas:core:2.0:User" in ids
    user = scim.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").get_json()
    password = next(a for a in user["attributes"] if a["name"] == "password")
    assert password["returned"] == "never" and password["mutability"] == "writeOnly"
    user_name = next(a for a in user["attributes"] if a["name"] == "userName")
    assert user_name["uniqueness"] == "server" and user_name["caseExact"] is False
    assert scim.get("/Schemas/urn:nope").status_code == 404
    assert scim.get("/ResourceTypes/Nope").status_code == 404


def test_discovery_endpoints_are_read_only(scim: ScimClient) -> None:
    response = scim.post("/ServiceProviderConfig", {})
    assert response.status_code == 405
    assert response.get_json()["status"] == "405"
