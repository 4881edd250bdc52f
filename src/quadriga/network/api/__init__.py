"""The embedded networking service's HTTP API: the subset of Neutron v2.0 the OpenStack clients need
(networks, subnets, ports, tags, and read-only stand-ins for security groups, subnet pools, QoS policies
and extensions), so `openstack network ...`, openstacksdk and octaviaclient work without a Neutron.

Neutron's conventions are kept where clients notice them: root keys, `NeutronError` bodies with Neutron's
exception type names, unknown list filters ignored, `fields`, `.json` suffixes, 201/200/204 codes.

Modules: `app` (the app and discovery), `routes` and `tags` (a resource type's endpoints), `kinds` (the
resource types), `schemas` and `parsing` (request bodies), `operations` (what writes do), `access`
(visibility and policy), `views` (rendering), `listing` (Neutron's list rules for the shared engine),
`stand_ins`, `errors`."""

from quadriga.network.api.app import create_app

__all__ = ["create_app"]
