"""Lists: pagination with markers and links, sorting, filtering, `fields` and tag filters."""

from __future__ import annotations

import pytest

LB = "/v2/lbaas/loadbalancers"


@pytest.fixture
def five(api):
    tags = [["red"], ["red", "blue"], ["blue"], [], ["green", "red"]]
    return [
        api.create_lb(name=f"lb{i}", description="even" if i % 2 == 0 else "odd", tags=t) for i, t in enumerate(tags)
    ]


def names(body, key="loadbalancers"):
    return [i["name"] for i in body[key]]


def test_default_order_is_creation_and_pages_follow_next_links(api, five):
    page = api.ok(api.get(f"{LB}?limit=2"), 200)
    assert names(page) == ["lb0", "lb1"]
    (nxt,) = page["loadbalancers_links"]
    assert nxt["rel"] == "next" and f"marker={five[1]['id']}" in nxt["href"] and "limit=2" in nxt["href"]
    seen = names(page)
    href = nxt["href"]
    while href:
        page = api.ok(api.get(href.replace("http://testserver", "")), 200)
        seen += names(page)
        href = next((link["href"] for link in page["loadbalancers_links"] if link["rel"] == "next"), None)
        rels = {link["rel"] for link in page["loadbalancers_links"]}
        assert "previous" in rels or not page["loadbalancers"]
    assert seen == [f"lb{i}" for i in range(5)]


def test_a_page_that_is_not_full_has_no_next_link(api, five):
    body = api.ok(api.get(LB), 200)
    assert len(body["loadbalancers"]) == 5 and body["loadbalancers_links"] == []


def test_page_reverse_walks_backwards(api, five):
    body = api.ok(api.get(f"{LB}?limit=2&marker={five[3]['id']}&page_reverse=true"), 200)
    assert names(body) == ["lb1", "lb2"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=name:desc", ["lb4", "lb3", "lb2", "lb1", "lb0"]),
        ("sort_key=description,name&sort_dir=asc,desc", ["lb4", "lb2", "lb0", "lb3", "lb1"]),
        ("sort=description:asc,name:asc", ["lb0", "lb2", "lb4", "lb1", "lb3"]),
    ],
)
def test_sorting(api, five, query, expected):
    assert names(api.ok(api.get(f"{LB}?{query}"), 200)) == expected


def test_sorted_pages_with_marker(api, five):
    first = api.ok(api.get(f"{LB}?sort=description:asc,name:desc&limit=2"), 200)
    assert names(first) == ["lb4", "lb2"]
    marker = first["loadbalancers"][-1]["id"]
    second = api.ok(api.get(f"{LB}?sort=description:asc,name:desc&limit=2&marker={marker}"), 200)
    assert names(second) == ["lb0", "lb3"]


def test_filters(api, five):
    assert names(api.ok(api.get(f"{LB}?description=odd"), 200)) == ["lb1", "lb3"]
    assert names(api.ok(api.get(f"{LB}?name=lb2"), 200)) == ["lb2"]
    assert names(api.ok(api.get(f"{LB}?name=lb2&name=lb4"), 200)) == ["lb2", "lb4"]
    assert names(api.ok(api.get(f"{LB}?admin_state_up=true&provisioning_status=ACTIVE"), 200)) == [
        f"lb{i}" for i in range(5)
    ]
    assert names(api.ok(api.get(f"{LB}?project_id=project-a&tenant_id=project-a"), 200))
    assert api.ok(api.get(f"{LB}?project_id=nobody"), 200)["loadbalancers"] == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tags=red", ["lb0", "lb1", "lb4"]),
        ("tags=red,blue", ["lb1"]),
        ("tags=red&tags=blue", ["lb1"]),
        ("tags-any=blue,green", ["lb1", "lb2", "lb4"]),
        ("not-tags=red,blue", ["lb0", "lb2", "lb3", "lb4"]),
        ("not-tags-any=red,blue", ["lb3"]),
    ],
)
def test_tag_filters(api, five, query, expected):
    assert names(api.ok(api.get(f"{LB}?{query}"), 200)) == expected


def test_fields_repeated_and_comma_forms(api, five):
    body = api.ok(api.get(f"{LB}?fields=id&fields=name&limit=1"), 200)
    assert body["loadbalancers"] == [{"id": five[0]["id"], "name": "lb0"}]
    one = api.ok(api.get(f"{LB}/{five[0]['id']}?fields=name,vip_address"), 200)["loadbalancer"]
    assert set(one) == {"name", "vip_address"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "Supplied pagination limit '0' is not valid."),
        ("limit=-1", "Supplied pagination limit '-1' is not valid."),
        ("limit=1000000000", "Supplied pagination limit '1000000000' is not valid."),
        ("sort=bogus", "Supplied sort key 'bogus' is not valid."),
        ("sort=name:sideways", "Supplied sort direction 'sideways' is not valid."),
        ("marker=7a0c7bd8-24cf-4b7b-8c55-2f1e3b0a9d11", "Supplied pagination marker"),
        ("bogus=1", "One or more arguments are either duplicate or invalid"),
        ("admin_state_up=maybe", "Invalid input for field/attribute admin_state_up"),
    ],
)
def test_bad_list_parameters_are_400(api, five, query, message):
    r = api.get(f"{LB}?{query}")
    assert r.status_code == 400
    assert r.json()["faultstring"].startswith(message)
    assert r.json()["faultcode"] == "Client"


def test_child_lists_filter_by_parent(api):
    a, b = api.create_lb(name="a"), api.create_lb(name="b")
    for lb in (a, b):
        api.create(
            "/v2/lbaas/listeners", "listener", lb["id"], loadbalancer_id=lb["id"], protocol="TCP", protocol_port=1
        )
    listeners = api.ok(api.get(f"/v2/lbaas/listeners?loadbalancer_id={a['id']}"), 200)["listeners"]
    assert [li["loadbalancers"] for li in listeners] == [[{"id": a["id"]}]]
