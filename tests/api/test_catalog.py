"""The operator's catalogue (flavor profiles, flavors, availability zone profiles, availability zones),
providers and their capabilities, and the amphora API, as Octavia answers them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from quadriga.db import models as m
from quadriga.providers.noop import AZ_METADATA, FLAVOR_METADATA, NoopProvider
from tests.support.api_harness import Api

FP, FPS = "/v2/lbaas/flavorprofiles", "flavorprofile"
FL = "/v2/lbaas/flavors"
AZP = "/v2/lbaas/availabilityzoneprofiles"
AZ = "/v2/lbaas/availabilityzones"


def fault(status: int, message: str) -> dict[str, Any]:
    return {"faultcode": "Client" if status < 500 else "Server", "faultstring": message, "debuginfo": None}


def assert_fault(r: Any, status: int, message: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"faultcode", "faultstring", "debuginfo"}
    assert body["faultcode"] == ("Client" if status < 500 else "Server")
    if message is not None:
        assert body["faultstring"] == message
    return body


def flavorprofile(api: Api, data: str = "{}", provider: str = "noop", name: str = "fp") -> dict:
    body = {"flavorprofile": {"name": name, "provider_name": provider, "flavor_data": data}}
    return api.ok(api.post(FP, body), 201)["flavorprofile"]


def flavor(api: Api, profile_id: str, name: str = "gold", **extra: Any) -> dict:
    return api.ok(api.post(FL, {"flavor": {"name": name, "flavor_profile_id": profile_id, **extra}}), 201)["flavor"]


def azprofile(api: Api, data: str = "{}", provider: str = "noop", name: str = "azp") -> dict:
    body = {"availability_zone_profile": {"name": name, "provider_name": provider, "availability_zone_data": data}}
    return api.ok(api.post(AZP, body), 201)["availability_zone_profile"]


def zone(api: Api, profile_id: str, name: str = "az1", **extra: Any) -> dict:
    body = {"availability_zone": {"name": name, "availability_zone_profile_id": profile_id, **extra}}
    return api.ok(api.post(AZ, body), 201)["availability_zone"]


def lb_rows(api: Api) -> int:
    with api.db.read() as s:
        return s.scalar(select(func.count()).select_from(m.LoadBalancer)) or 0


# --- CRUD and the shape of every body -----------------------------------------------------------------


def test_flavorprofile_crud(api: Api) -> None:
    data = '{"loadbalancer_topology": "SINGLE"}'
    fp = flavorprofile(api, data)
    assert set(fp) == {"id", "name", "provider_name", "flavor_data"}
    assert fp["name"] == "fp" and fp["provider_name"] == "noop" and fp["flavor_data"] == data

    listed = api.ok(api.get(FP), 200)
    assert set(listed) == {"flavorprofiles", "flavorprofile_links"}
    assert listed["flavorprofiles"] == [fp] and listed["flavorprofile_links"] == []
    assert api.ok(api.get(f"{FP}?fields=name&fields=id"), 200)["flavorprofiles"] == [{"id": fp["id"], "name": "fp"}]
    assert api.ok(api.get(f"{FP}/{fp['id']}"), 200) == {"flavorprofile": fp}
    assert api.ok(api.get(f"{FP}/{fp['id']}?fields=provider_name"), 200) == {"flavorprofile": {"provider_name": "noop"}}

    new_data = '{"compute_flavor": "m1.small"}'
    r = api.put(f"{FP}/{fp['id']}", {"flavorprofile": {"name": "fp2", "flavor_data": new_data}})
    assert r.status_code == 200, r.text
    assert r.json() == {"flavorprofile": {**fp, "name": "fp2", "flavor_data": new_data}}

    assert api.delete(f"{FP}/{fp['id']}").status_code == 204
    assert_fault(api.get(f"{FP}/{fp['id']}"), 404, f"Flavor profile {fp['id']} not found.")
    assert_fault(api.delete(f"{FP}/{fp['id']}"), 404, f"Flavor profile {fp['id']} not found.")


def test_flavor_crud(api: Api) -> None:
    fp = flavorprofile(api)
    fl = flavor(api, fp["id"], description="shiny")
    assert fl == {
        "id": fl["id"],
        "name": "gold",
        "description": "shiny",
        "enabled": True,
        "flavor_profile_id": fp["id"],
    }
    plain = flavor(api, fp["id"], name="plain")
    assert plain["description"] == ""  # null is shown as ""

    listed = api.ok(api.get(FL), 200)
    assert set(listed) == {"flavors", "flavors_links"}
    assert sorted(f["name"] for f in listed["flavors"]) == ["gold", "plain"]
    assert api.ok(api.get(f"{FL}?name=plain"), 200)["flavors"] == [plain]
    assert api.ok(api.get(f"{FL}/{fl['id']}"), 200) == {"flavor": fl}
    assert api.ok(api.get(f"{FL}/{fl['id']}?fields=enabled"), 200) == {"flavor": {"enabled": True}}

    r = api.put(f"{FL}/{fl['id']}", {"flavor": {"name": "silver", "description": "", "enabled": False}})
    assert r.status_code == 200, r.text
    assert r.json() == {"flavor": {**fl, "name": "silver", "description": "", "enabled": False}}
    # the profile of a flavor cannot change
    r = api.put(f"{FL}/{fl['id']}", {"flavor": {"flavor_profile_id": flavorprofile(api)["id"]}})
    assert_fault(r, 400)
    assert api.ok(api.get(f"{FL}/{fl['id']}"), 200)["flavor"]["flavor_profile_id"] == fp["id"]

    assert api.delete(f"{FL}/{fl['id']}").status_code == 204
    assert_fault(api.get(f"{FL}/{fl['id']}"), 404, f"Flavor {fl['id']} not found.")
    assert_fault(api.put(f"{FL}/{fl['id']}", {"flavor": {"name": "x"}}), 404, f"Flavor {fl['id']} not found.")


def test_flavor_validation(api: Api) -> None:
    fp = flavorprofile(api)
    r = api.post(FL, {"flavor": {"flavor_profile_id": fp["id"]}})
    assert_fault(r, 400, "Invalid input for field/attribute name. Value: 'None'. Mandatory field missing.")
    r = api.post(FL, {"flavor": {"name": "x"}})
    assert_fault(r, 400, "Invalid input for field/attribute flavor_profile_id. Value: 'None'. Mandatory field missing.")
    assert_fault(api.post(FL, {"flavor": {"name": "x", "flavor_profile_id": "bogus"}}), 400)
    assert_fault(api.post(FL, {"flavor": {"name": "n" * 256, "flavor_profile_id": fp["id"]}}), 400)
    assert_fault(api.post(FL, {"flavor": {"name": "x", "description": "d" * 256, "flavor_profile_id": fp["id"]}}), 400)
    assert_fault(api.post(FL, {"flavor": {"name": "x", "flavor_profile_id": fp["id"], "bogus": 1}}), 400)
    assert_fault(api.post(FL, {"flavour": {"name": "x", "flavor_profile_id": fp["id"]}}), 400)
    # a profile id that names no profile
    missing = "8f8c4c8e-0c9e-4f8a-9a51-6a7d1c9f2b11"
    assert_fault(api.post(FL, {"flavor": {"name": "x", "flavor_profile_id": missing}}), 404)
    assert api.ok(api.get(FL), 200)["flavors"] == []


def test_availability_zone_profile_crud(api: Api) -> None:
    data = '{"compute_zone": "nova"}'
    azp = azprofile(api, data)
    assert set(azp) == {"id", "name", "provider_name", "availability_zone_data"}
    assert azp["availability_zone_data"] == data
    listed = api.ok(api.get(AZP), 200)
    assert set(listed) == {"availability_zone_profiles", "availability_zone_profile_links"}
    assert listed["availability_zone_profiles"] == [azp]
    assert api.ok(api.get(f"{AZP}/{azp['id']}"), 200) == {"availability_zone_profile": azp}
    r = api.put(f"{AZP}/{azp['id']}", {"availability_zone_profile": {"name": "renamed"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"availability_zone_profile": {**azp, "name": "renamed"}}
    assert api.delete(f"{AZP}/{azp['id']}").status_code == 204
    assert_fault(api.get(f"{AZP}/{azp['id']}"), 404, f"Availability Zone Profile {azp['id']} not found.")


def test_availability_zone_crud(api: Api) -> None:
    azp = azprofile(api)
    az = zone(api, azp["id"], description="first")
    assert az == {"name": "az1", "description": "first", "enabled": True, "availability_zone_profile_id": azp["id"]}
    listed = api.ok(api.get(AZ), 200)
    assert set(listed) == {"availability_zones", "availability_zones_links"}
    assert listed["availability_zones"] == [az]
    assert api.ok(api.get(f"{AZ}/az1"), 200) == {"availability_zone": az}  # keyed by name
    r = api.put(f"{AZ}/az1", {"availability_zone": {"description": "changed", "enabled": False}})
    assert r.status_code == 200, r.text
    assert r.json() == {"availability_zone": {**az, "description": "changed", "enabled": False}}
    # name and profile are immutable
    assert_fault(api.put(f"{AZ}/az1", {"availability_zone": {"name": "az2"}}), 400)
    assert_fault(api.put(f"{AZ}/az1", {"availability_zone": {"availability_zone_profile_id": azp["id"]}}), 400)
    assert api.delete(f"{AZ}/az1").status_code == 204
    assert_fault(api.get(f"{AZ}/az1"), 404, "Availability Zone az1 not found.")


# --- profile metadata -------------------------------------------------------------------------------------


PROFILES = [
    pytest.param(FP, "flavorprofile", "flavor_data", id="flavorprofile"),
    pytest.param(AZP, "availability_zone_profile", "availability_zone_data", id="azprofile"),
]


@pytest.mark.parametrize(("path", "root", "attr"), PROFILES)
@pytest.mark.parametrize("raw", ['{hello: "world"}', "not json", "", "[1, 2]", '"a string"', "42"])
def test_profile_data_must_be_a_json_object_string(api: Api, path: str, root: str, attr: str, raw: str) -> None:
    r = api.post(path, {root: {"name": "p", "provider_name": "noop", attr: raw}})
    assert_fault(r, 400, f"{raw} is not a valid option for {attr}")  # Octavia's InvalidOption
    created = api.ok(api.post(path, {root: {"name": "p", "provider_name": "noop", attr: "{}"}}), 201)[root]
    r = api.put(f"{path}/{created['id']}", {root: {attr: raw}})
    assert_fault(r, 400, f"{raw} is not a valid option for {attr}")
    assert api.ok(api.get(f"{path}/{created['id']}"), 200)[root][attr] == "{}"


@pytest.mark.parametrize(("path", "root", "attr"), PROFILES)
def test_profile_data_is_a_string_of_at_most_4096(api: Api, path: str, root: str, attr: str) -> None:
    assert_fault(api.post(path, {root: {"name": "p", "provider_name": "noop", attr: {"a": 1}}}), 400)
    long = '{"compute_zone": "' + "z" * 4096 + '"}'
    assert_fault(api.post(path, {root: {"name": "p", "provider_name": "noop", attr: long}}), 400)
    r = api.post(path, {root: {"name": "p", "provider_name": "noop"}})
    assert_fault(r, 400, f"Invalid input for field/attribute {attr}. Value: 'None'. Mandatory field missing.")


@pytest.mark.parametrize(("path", "root", "attr"), PROFILES)
def test_unsupported_metadata_is_501(api: Api, path: str, root: str, attr: str) -> None:
    """Octavia's call_provider turns the driver's UnsupportedOptionError into 501
    ProviderUnsupportedOptionError: "Provider 'x' does not support a requested option: ..."."""
    r = api.post(path, {root: {"name": "p", "provider_name": "noop", attr: '{"bogus_key": 1}'}})
    body = assert_fault(r, 501)
    assert body["faultstring"].startswith("Provider 'noop' does not support a requested option: ")
    assert "bogus_key" in body["faultstring"]
    supported = '{"loadbalancer_topology": "SINGLE"}' if root == "flavorprofile" else '{"compute_zone": "nova"}'
    created = api.ok(api.post(path, {root: {"name": "p", "provider_name": "noop", attr: supported}}), 201)[root]
    r = api.put(f"{path}/{created['id']}", {root: {attr: '{"bogus_key": 1}'}})
    assert assert_fault(r, 501)["faultstring"].startswith("Provider 'noop' does not support a requested option: ")
    assert api.ok(api.get(f"{path}/{created['id']}"), 200)[root][attr] == supported


@pytest.mark.parametrize(("path", "root", "attr"), PROFILES)
def test_unknown_provider_is_400(api: Api, path: str, root: str, attr: str) -> None:
    r = api.post(path, {root: {"name": "p", "provider_name": "octavia", attr: "{}"}})
    assert_fault(r, 400, "Provider 'octavia' is not enabled.")
    created = api.ok(api.post(path, {root: {"name": "p", "provider_name": "noop", attr: "{}"}}), 201)[root]
    assert_fault(api.put(f"{path}/{created['id']}", {root: {"provider_name": "octavia"}}), 400)
    assert api.ok(api.get(path), 200)[f"{root}s"] == [created]


# --- uniqueness and in-use rules ------------------------------------------------------------------------


def test_duplicate_names_are_409(api: Api) -> None:
    fp = flavorprofile(api)
    flavor(api, fp["id"], name="gold")
    silver = flavor(api, fp["id"], name="silver")
    r = api.post(FL, {"flavor": {"name": "gold", "flavor_profile_id": fp["id"]}})
    assert_fault(r, 409, "A flavor of gold already exists.")
    assert_fault(api.put(f"{FL}/{silver['id']}", {"flavor": {"name": "gold"}}), 409)
    azp = azprofile(api)
    zone(api, azp["id"], name="az1")
    r = api.post(AZ, {"availability_zone": {"name": "az1", "availability_zone_profile_id": azp["id"]}})
    assert_fault(r, 409, "A availability zone of az1 already exists.")
    # profiles need not have unique names
    flavorprofile(api, name="fp")


def test_profiles_in_use(api: Api) -> None:
    fp = flavorprofile(api)
    flavor(api, fp["id"])
    message = f"Flavor profile {fp['id']} is in use and cannot be modified."
    assert_fault(api.delete(f"{FP}/{fp['id']}"), 409, message)
    # while in use, its provider and data are frozen; its name is not
    assert_fault(
        api.put(f"{FP}/{fp['id']}", {"flavorprofile": {"flavor_data": '{"compute_flavor": "x"}'}}), 409, message
    )
    assert_fault(api.put(f"{FP}/{fp['id']}", {"flavorprofile": {"provider_name": "noop"}}), 409, message)
    assert api.put(f"{FP}/{fp['id']}", {"flavorprofile": {"name": "renamed"}}).status_code == 200
    assert api.ok(api.get(f"{FP}/{fp['id']}"), 200)["flavorprofile"]["flavor_data"] == "{}"

    azp = azprofile(api)
    zone(api, azp["id"])
    message = f"Availability Zone Profile {azp['id']} is in use and cannot be modified."
    assert_fault(api.delete(f"{AZP}/{azp['id']}"), 409, message)
    r = api.put(f"{AZP}/{azp['id']}", {"availability_zone_profile": {"availability_zone_data": "{}"}})
    assert_fault(r, 409, message)


def test_flavor_and_zone_in_use_by_a_load_balancer(api: Api) -> None:
    fl = flavor(api, flavorprofile(api)["id"])
    az = zone(api, azprofile(api)["id"])
    lb = api.create_lb(flavor_id=fl["id"], availability_zone=az["name"])
    assert_fault(api.delete(f"{FL}/{fl['id']}"), 409, f"Flavor {fl['id']} is in use and cannot be modified.")
    assert_fault(api.delete(f"{AZ}/az1"), 409, "Availability Zone az1 is in use and cannot be modified.")
    # disabling is allowed while in use
    assert api.put(f"{FL}/{fl['id']}", {"flavor": {"enabled": False}}).status_code == 200
    assert api.ok(api.get(f"/v2/lbaas/loadbalancers/{lb['id']}"), 200)["loadbalancer"]["flavor_id"] == fl["id"]


# --- load balancers with a flavor or an availability zone -------------------------------------------------


class AltProvider(NoopProvider):
    name = "alt"
    description = "A second no-op provider."


@pytest.fixture
def two_providers(api: Api) -> Api:
    """The app and the controller share the providers dict: add a second enabled provider."""
    svc = api.client.app.state.services
    svc.providers["alt"] = AltProvider()
    return api


def test_lb_with_a_flavor_uses_the_flavor_provider(two_providers: Api) -> None:
    api = two_providers
    fl = flavor(api, flavorprofile(api, '{"loadbalancer_topology": "ACTIVE_STANDBY"}', provider="alt")["id"])
    lb = api.create_lb(flavor_id=fl["id"])
    assert lb["provider"] == "alt" and lb["flavor_id"] == fl["id"]
    assert api.create_lb(flavor_id=fl["id"], provider="alt")["provider"] == "alt"
    before = lb_rows(api)
    r = api.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "flavor_id": fl["id"], "provider": "noop"}},
    )
    assert_fault(r, 400, f"Flavor '{fl['id']}' is not compatible with provider 'noop'")
    assert lb_rows(api) == before
    providers = api.ok(api.get("/v2/lbaas/providers"), 200)["providers"]
    assert {"name": "alt", "description": "A second no-op provider."} in providers


def test_lb_with_a_bad_flavor(api: Api) -> None:
    fl = flavor(api, flavorprofile(api)["id"], enabled=False)
    subnet = api.subnet_id()
    r = api.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet, "flavor_id": fl["id"]}})
    assert_fault(r, 400, f"The selected flavor is not allowed in this deployment: {fl['id']}")
    unknown = "5d0b35f4-6b7c-4f3a-b1e1-0f3c2f0a9a77"
    r = api.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet, "flavor_id": unknown}})
    assert_fault(r, 400, "Validation failure: Invalid flavor_id.")
    r = api.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet, "provider": "amphora"}})
    assert_fault(r, 400, "Provider 'amphora' is not enabled.")
    assert lb_rows(api) == 0
    with api.db.read() as s:
        assert s.scalar(select(func.count()).select_from(m.Port).where(m.Port.device_owner == "Octavia")) == 0


def test_lb_with_an_availability_zone(api: Api) -> None:
    azp = azprofile(api, '{"compute_zone": "rack1"}')
    zone(api, azp["id"], name="az1")
    zone(api, azp["id"], name="off", enabled=False)
    lb = api.create_lb(availability_zone="az1")
    assert lb["availability_zone"] == "az1"
    subnet = api.subnet_id()
    before = lb_rows(api)
    r = api.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet, "availability_zone": "nowhere"}})
    assert_fault(r, 400, "Validation failure: Invalid availability zone.")
    r = api.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet, "availability_zone": "off"}})
    assert_fault(r, 400, "The selected availability_zone is not allowed in this deployment: off")
    assert lb_rows(api) == before


def test_lb_with_a_zone_of_another_provider(two_providers: Api) -> None:
    api = two_providers
    zone(api, azprofile(api, provider="alt")["id"], name="alt-zone")
    r = api.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": api.subnet_id(), "availability_zone": "alt-zone", "provider": "noop"}},
    )
    assert_fault(r, 400)


# --- providers and capabilities ---------------------------------------------------------------------------


def test_providers(api: Api) -> None:
    assert api.ok(api.get("/v2/lbaas/providers"), 200) == {
        "providers": [{"name": "noop", "description": NoopProvider.description}]
    }
    assert api.ok(api.get("/v2/lbaas/providers?fields=name"), 200) == {"providers": [{"name": "noop"}]}


@pytest.mark.parametrize(
    ("kind", "metadata"),
    [("flavor_capabilities", FLAVOR_METADATA), ("availability_zone_capabilities", AZ_METADATA)],
)
def test_capabilities(api: Api, kind: str, metadata: dict[str, str]) -> None:
    path = f"/v2/lbaas/providers/noop/{kind}"
    items = api.ok(api.get(path), 200)[kind]
    assert all(set(item) == {"name", "description"} for item in items)
    assert {item["name"]: item["description"] for item in items} == metadata
    names = api.ok(api.get(f"{path}?fields=name"), 200)[kind]
    assert sorted(names, key=lambda i: i["name"]) == [{"name": n} for n in sorted(metadata)]
    descriptions = api.ok(api.get(f"{path}?fields=description"), 200)[kind]
    assert sorted(d["description"] for d in descriptions) == sorted(metadata.values())
    first = sorted(metadata)[0]
    assert api.ok(api.get(f"{path}?name={first}"), 200)[kind] == [{"name": first, "description": metadata[first]}]
    assert api.ok(api.get(f"{path}?name=nothing-like-it"), 200)[kind] == []
    assert_fault(api.get(f"/v2/lbaas/providers/nope/{kind}"), 400, "Provider 'nope' is not enabled.")


# --- amphorae --------------------------------------------------------------------------------------------


def test_amphorae(api: Api) -> None:
    assert api.ok(api.get("/v2/octavia/amphorae"), 200) == {"amphorae": [], "amphorae_links": []}
    unknown = "0b0b6fb0-7c0c-4c55-9e0e-0d3c1e1e4a21"
    assert api.get(f"/v2/octavia/amphorae/{unknown}").json() == fault(404, f"Amphora {unknown} not found.")
    assert api.get(f"/v2/octavia/amphorae/{unknown}").status_code == 404
    for method, suffix in (("GET", "/stats"), ("PUT", "/config"), ("PUT", "/failover"), ("DELETE", "")):
        r = api.req(method, f"/v2/octavia/amphorae/{unknown}{suffix}")
        assert_fault(r, 404, f"Amphora {unknown} not found.")
