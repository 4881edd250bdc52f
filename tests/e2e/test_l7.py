"""L7 policies and rules, proven with real requests through a VIP: every rule type (HOST_NAME, PATH,
FILE_TYPE, HEADER, COOKIE) with every compare type it takes, invert, the four actions (REJECT,
REDIRECT_TO_URL, REDIRECT_PREFIX, REDIRECT_TO_POOL), every redirect code, disabled policies, and policy
positions (the first match wins, and moving a policy changes the outcome).

One load balancer whose HTTP listener carries all the policies serves the whole module. Each rule case is a
REDIRECT_TO_URL policy that redirects to a URL naming the case, so the Location header tells which policy
matched; every case also sends a near miss, which must reach the default pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.dataplane import Cloud
from tests.support.graph import find, listener, pool

REDIRECT_CODES = [301, 302, 303, 307, 308]


@dataclass(frozen=True)
class Req:
    path: str = "/"
    host: str = "quadriga.test"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleCase:
    type: str
    compare_type: str
    value: str
    hit: Req
    miss: Req
    key: str | None = None

    @property
    def id(self) -> str:
        return f"{self.type}-{self.compare_type}".lower()


def _header(value: str) -> Req:
    return Req(headers={"X-Route": value})


def _cookie(value: str) -> Req:
    return Req(headers={"Cookie": f"other=1; route={value}"})


RULE_CASES = [
    RuleCase("HOST_NAME", "EQUAL_TO", "eq.host.test", Req(host="EQ.Host.test"), Req(host="eq.host.test.other")),
    RuleCase("HOST_NAME", "STARTS_WITH", "sw-host.", Req(host="sw-host.test"), Req(host="x.sw-host.test")),
    RuleCase("HOST_NAME", "ENDS_WITH", ".ew-host", Req(host="a.ew-host"), Req(host="a.ew-host.test")),
    RuleCase("HOST_NAME", "CONTAINS", "ct-host", Req(host="a.ct-host.b"), Req(host="a.ct-hos.b")),
    RuleCase("HOST_NAME", "REGEX", r"^rx-host[0-9]+\.test$", Req(host="rx-host42.test"), Req(host="rx-hostx.test")),
    RuleCase("PATH", "EQUAL_TO", "/eq-path", Req("/eq-path"), Req("/eq-path/more")),
    RuleCase("PATH", "STARTS_WITH", "/sw-path", Req("/sw-path/x"), Req("/x/sw-path")),
    RuleCase("PATH", "ENDS_WITH", "/ew-path", Req("/x/ew-path"), Req("/x/ew-path/y")),
    RuleCase("PATH", "CONTAINS", "ct-path", Req("/a/ct-path/b"), Req("/a/ct-pat/b")),
    RuleCase("PATH", "REGEX", r"^/rx-path/[0-9]+$", Req("/rx-path/12"), Req("/rx-path/12a")),
    RuleCase("FILE_TYPE", "EQUAL_TO", "ftq", Req("/img/a.ftq"), Req("/img/a.ftqx")),
    RuleCase("FILE_TYPE", "REGEX", r"\.(rxa|rxb)$", Req("/img/a.rxb"), Req("/img/a.rxc")),
    RuleCase("HEADER", "EQUAL_TO", "eqh", _header("eqh"), _header("eqhh"), "X-Route"),
    RuleCase("HEADER", "STARTS_WITH", "swh", _header("swh-1"), _header("x-swh"), "X-Route"),
    RuleCase("HEADER", "ENDS_WITH", "ewh", _header("x-ewh"), _header("ewh-x"), "X-Route"),
    RuleCase("HEADER", "CONTAINS", "cth", _header("a-cth-b"), _header("a-ct-h"), "X-Route"),
    RuleCase("HEADER", "REGEX", "^rxh[0-9]+$", _header("rxh12"), _header("rxh12x"), "X-Route"),
    RuleCase("COOKIE", "EQUAL_TO", "eqc", _cookie("eqc"), _cookie("eqcc"), "route"),
    RuleCase("COOKIE", "STARTS_WITH", "swc", _cookie("swc-1"), _cookie("x-swc"), "route"),
    RuleCase("COOKIE", "ENDS_WITH", "ewc", _cookie("x-ewc"), _cookie("ewc-x"), "route"),
    RuleCase("COOKIE", "CONTAINS", "ctc", _cookie("a-ctc-b"), _cookie("a-ct-c"), "route"),
    RuleCase("COOKIE", "REGEX", "^rxc[0-9]+$", _cookie("rxc12"), _cookie("rxc12x"), "route"),
]


def code_of(n: int) -> int:
    return REDIRECT_CODES[n % len(REDIRECT_CODES)]


def rule(kind: str, compare: str, value: str, key: str | None = None, invert: bool = False) -> dict:
    body = {"type": kind, "compare_type": compare, "value": value, "invert": invert}
    return body | ({"key": key} if key else {})


@dataclass
class Site:
    lb: dict
    vip: str


@pytest.fixture(scope="module")
def site(cloud: Cloud) -> Iterator[Site]:
    with contextlib.ExitStack() as stack:
        main, alt = cloud.backend("l7-main"), cloud.backend("l7-alt")
        to_alt = {"action": "REDIRECT_TO_POOL", "redirect_pool": {"name": "l7-alt"}}
        policies = [
            # Both match /order/reject: the one in front wins (see test_positions_decide_which_match_wins).
            {"name": "l7-order-pool", **to_alt, "rules": [rule("PATH", "STARTS_WITH", "/order")]},
            {"name": "l7-order-reject", "action": "REJECT", "rules": [rule("PATH", "STARTS_WITH", "/order/reject")]},
            {"name": "l7-reject", "action": "REJECT", "rules": [rule("PATH", "STARTS_WITH", "/reject")]},
            {
                "name": "l7-disabled",
                "action": "REJECT",
                "admin_state_up": False,
                "rules": [rule("PATH", "STARTS_WITH", "/disabled")],
            },
            {
                "name": "l7-prefix-default",
                "action": "REDIRECT_PREFIX",
                "redirect_prefix": "https://prefix.test",
                "rules": [rule("PATH", "STARTS_WITH", "/prefix-a")],
            },
            {
                "name": "l7-prefix-308",
                "action": "REDIRECT_PREFIX",
                "redirect_prefix": "https://prefix.test/under",
                "redirect_http_code": 308,
                "rules": [rule("PATH", "STARTS_WITH", "/prefix-b")],
            },
            {"name": "l7-to-pool", **to_alt, "rules": [rule("HEADER", "EQUAL_TO", "alt", key="X-Pool")]},
            {
                "name": "l7-invert",
                **to_alt,
                "rules": [  # all rules of a policy must match: /inv without "X-Keep: yes"
                    rule("PATH", "STARTS_WITH", "/inv"),
                    rule("HEADER", "EQUAL_TO", "yes", key="X-Keep", invert=True),
                ],
            },
        ]
        for n, case in enumerate(RULE_CASES):
            policies.append(
                {
                    "name": f"l7-{case.id}",
                    "action": "REDIRECT_TO_URL",
                    "redirect_url": f"http://redirect.test/{case.id}",
                    "redirect_http_code": code_of(n),
                    "rules": [rule(case.type, case.compare_type, case.value, case.key)],
                }
            )
        li = listener("l7-http", "HTTP", 80, pool("l7-main", "HTTP", [cloud.member(main)]), l7policies=policies)
        lb = cloud.create_lb(name="l7", listeners=[li], pools=[pool("l7-alt", "HTTP", [cloud.member(alt)])])
        stack.callback(cloud.delete_lb, lb["id"])
        yield Site(lb, lb["vip_address"])


def send(cloud: Cloud, site: Site, req: Req) -> httpx.Response:
    return cloud.get(site.vip, 80, req.path, headers={"Host": req.host, **req.headers})


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.id)
def test_rule_types_and_compare_types(cloud: Cloud, site: Site, case: RuleCase) -> None:
    n = RULE_CASES.index(case)
    hit = send(cloud, site, case.hit)
    assert hit.status_code == code_of(n), (hit.status_code, hit.text[:200])
    assert hit.headers["location"] == f"http://redirect.test/{case.id}"
    miss = send(cloud, site, case.miss)
    assert (miss.status_code, miss.text.strip()) == (200, "l7-main"), miss.headers.get("location")


def test_requests_no_policy_matches_reach_the_default_pool(cloud: Cloud, site: Site) -> None:
    assert cloud.answers(site.vip, 2, path="/nothing/special") == ["l7-main"] * 2


def test_reject_answers_403(cloud: Cloud, site: Site) -> None:
    assert cloud.get(site.vip, 80, "/reject/this").status_code == 403
    assert cloud.get(site.vip, 80, "/rejection-is-a-prefix").status_code == 403


def test_disabled_policy_does_nothing(cloud: Cloud, site: Site) -> None:
    answer = cloud.get(site.vip, 80, "/disabled")
    assert (answer.status_code, answer.text.strip()) == (200, "l7-main")


def test_redirect_prefix_keeps_the_path_with_the_given_code(cloud: Cloud, site: Site) -> None:
    default = cloud.get(site.vip, 80, "/prefix-a/page?q=1")
    assert default.status_code == 302  # Octavia's default redirect code
    assert default.headers["location"] == "https://prefix.test/prefix-a/page?q=1"
    coded = cloud.get(site.vip, 80, "/prefix-b/x")
    assert coded.status_code == 308
    assert coded.headers["location"] == "https://prefix.test/under/prefix-b/x"


def test_redirect_to_pool_and_invert(cloud: Cloud, site: Site) -> None:
    assert cloud.get(site.vip, 80, "/", headers={"X-Pool": "alt"}).text.strip() == "l7-alt"
    assert cloud.get(site.vip, 80, "/", headers={"X-Pool": "other"}).text.strip() == "l7-main"
    assert cloud.get(site.vip, 80, "/inv").text.strip() == "l7-alt"  # X-Keep absent: the inverted rule holds
    assert cloud.get(site.vip, 80, "/inv", headers={"X-Keep": "no"}).text.strip() == "l7-alt"
    assert cloud.get(site.vip, 80, "/inv", headers={"X-Keep": "yes"}).text.strip() == "l7-main"


def test_positions_decide_which_match_wins(cloud: Cloud, site: Site) -> None:
    # /order/reject matches a REDIRECT_TO_POOL policy (position 1) and a REJECT policy (position 2).
    assert cloud.get(site.vip, 80, "/order/reject").text.strip() == "l7-alt"
    reject = find(cloud, "l7policies", "l7-order-reject")
    assert reject["position"] == 2
    cloud.change("PUT", f"/v2/lbaas/l7policies/{reject['id']}", site.lb["id"], {"l7policy": {"position": 1}})
    assert find(cloud, "l7policies", "l7-order-pool")["position"] == 2
    assert cloud.get(site.vip, 80, "/order/reject").status_code == 403
    assert cloud.get(site.vip, 80, "/order/other").text.strip() == "l7-alt"  # only the pool policy matches
