"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "amphorae",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("load_balancer_id", sa.String(length=36), nullable=True),
        sa.Column("compute_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=36), nullable=True),
        sa.Column("lb_network_ip", sa.String(length=64), nullable=True),
        sa.Column("vrrp_ip", sa.String(length=64), nullable=True),
        sa.Column("ha_ip", sa.String(length=64), nullable=True),
        sa.Column("vrrp_port_id", sa.String(length=36), nullable=True),
        sa.Column("ha_port_id", sa.String(length=36), nullable=True),
        sa.Column("cert_expiration", sa.DateTime(), nullable=True),
        sa.Column("cert_busy", sa.Boolean(), nullable=False),
        sa.Column("vrrp_interface", sa.String(length=16), nullable=True),
        sa.Column("vrrp_id", sa.Integer(), nullable=True),
        sa.Column("vrrp_priority", sa.Integer(), nullable=True),
        sa.Column("cached_zone", sa.String(length=255), nullable=True),
        sa.Column("image_id", sa.String(length=36), nullable=True),
        sa.Column("compute_flavor", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_amphorae_load_balancer_id"), ["load_balancer_id"], unique=False)

    op.create_table(
        "availability_zone_profiles",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("provider_name", sa.String(length=255), nullable=False),
        sa.Column("availability_zone_data", sa.String(length=4096), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "flavor_profiles",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("provider_name", sa.String(length=255), nullable=False),
        sa.Column("flavor_data", sa.String(length=4096), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "load_balancers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("flavor_id", sa.String(length=36), nullable=True),
        sa.Column("availability_zone", sa.String(length=255), nullable=True),
        sa.Column("vip_address", sa.String(length=64), nullable=True),
        sa.Column("vip_port_id", sa.String(length=36), nullable=True),
        sa.Column("vip_subnet_id", sa.String(length=36), nullable=True),
        sa.Column("vip_network_id", sa.String(length=36), nullable=True),
        sa.Column("vip_qos_policy_id", sa.String(length=36), nullable=True),
        sa.Column("vip_sg_ids", sa.JSON(), nullable=True),
        sa.Column("vip_vnic_type", sa.String(length=64), nullable=False),
        sa.Column("additional_vips", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("applied_revision", sa.Integer(), nullable=False),
        sa.Column("pending_subject", sa.String(length=80), nullable=True),
        sa.Column("lease_owner", sa.String(length=80), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("apply_attempts", sa.Integer(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("load_balancers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_load_balancers_project_id"), ["project_id"], unique=False)

    op.create_table(
        "networks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("external", sa.Boolean(), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_networks_project_id"), ["project_id"], unique=False)

    op.create_table(
        "quotas",
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("load_balancer", sa.Integer(), nullable=True),
        sa.Column("listener", sa.Integer(), nullable=True),
        sa.Column("pool", sa.Integer(), nullable=True),
        sa.Column("health_monitor", sa.Integer(), nullable=True),
        sa.Column("member", sa.Integer(), nullable=True),
        sa.Column("l7policy", sa.Integer(), nullable=True),
        sa.Column("l7rule", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("project_id"),
    )
    op.create_table(
        "tags",
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "tag"),
    )
    op.create_table(
        "availability_zones",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("availability_zone_profile_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["availability_zone_profile_id"],
            ["availability_zone_profiles.id"],
        ),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "flavors",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("flavor_profile_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["flavor_profile_id"],
            ["flavor_profiles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "pools",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("load_balancer_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("protocol", sa.String(length=32), nullable=False),
        sa.Column("lb_algorithm", sa.String(length=32), nullable=False),
        sa.Column("session_persistence", sa.JSON(), nullable=True),
        sa.Column("tls_enabled", sa.Boolean(), nullable=False),
        sa.Column("tls_container_ref", sa.String(length=255), nullable=True),
        sa.Column("ca_tls_container_ref", sa.String(length=255), nullable=True),
        sa.Column("crl_container_ref", sa.String(length=255), nullable=True),
        sa.Column("tls_ciphers", sa.String(length=2048), nullable=True),
        sa.Column("tls_versions", sa.JSON(), nullable=True),
        sa.Column("alpn_protocols", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["load_balancer_id"],
            ["load_balancers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pools_load_balancer_id"), ["load_balancer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pools_project_id"), ["project_id"], unique=False)

    op.create_table(
        "ports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("mac_address", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("device_owner", sa.String(length=255), nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("managed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["networks.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ports_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ports_project_id"), ["project_id"], unique=False)

    op.create_table(
        "subnets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=64), nullable=False),
        sa.Column("gateway_ip", sa.String(length=64), nullable=True),
        sa.Column("allocation_pools", sa.JSON(), nullable=False),
        sa.Column("enable_dhcp", sa.Boolean(), nullable=False),
        sa.Column("dns_nameservers", sa.JSON(), nullable=False),
        sa.Column("host_routes", sa.JSON(), nullable=False),
        sa.Column("ipv6_ra_mode", sa.String(length=32), nullable=True),
        sa.Column("ipv6_address_mode", sa.String(length=32), nullable=True),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["networks.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subnets_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_subnets_project_id"), ["project_id"], unique=False)

    op.create_table(
        "health_monitors",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("pool_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(length=36), nullable=False),
        sa.Column("delay", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("max_retries_down", sa.Integer(), nullable=False),
        sa.Column("http_method", sa.String(length=16), nullable=True),
        sa.Column("url_path", sa.String(length=2048), nullable=True),
        sa.Column("expected_codes", sa.String(length=64), nullable=True),
        sa.Column("http_version", sa.Float(), nullable=True),
        sa.Column("domain_name", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pool_id"),
    )
    with op.batch_alter_table("health_monitors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_health_monitors_project_id"), ["project_id"], unique=False)

    op.create_table(
        "listeners",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("load_balancer_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("protocol", sa.String(length=32), nullable=False),
        sa.Column("protocol_port", sa.Integer(), nullable=False),
        sa.Column("connection_limit", sa.Integer(), nullable=False),
        sa.Column("default_pool_id", sa.String(length=36), nullable=True),
        sa.Column("default_tls_container_ref", sa.String(length=255), nullable=True),
        sa.Column("sni_container_refs", sa.JSON(), nullable=False),
        sa.Column("insert_headers", sa.JSON(), nullable=False),
        sa.Column("timeout_client_data", sa.Integer(), nullable=False),
        sa.Column("timeout_member_connect", sa.Integer(), nullable=False),
        sa.Column("timeout_member_data", sa.Integer(), nullable=False),
        sa.Column("timeout_tcp_inspect", sa.Integer(), nullable=False),
        sa.Column("client_authentication", sa.String(length=16), nullable=False),
        sa.Column("client_ca_tls_container_ref", sa.String(length=255), nullable=True),
        sa.Column("client_crl_container_ref", sa.String(length=255), nullable=True),
        sa.Column("allowed_cidrs", sa.JSON(), nullable=True),
        sa.Column("tls_ciphers", sa.String(length=2048), nullable=True),
        sa.Column("tls_versions", sa.JSON(), nullable=True),
        sa.Column("alpn_protocols", sa.JSON(), nullable=True),
        sa.Column("hsts_max_age", sa.Integer(), nullable=True),
        sa.Column("hsts_include_subdomains", sa.Boolean(), nullable=False),
        sa.Column("hsts_preload", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_pool_id"],
            ["pools.id"],
        ),
        sa.ForeignKeyConstraint(
            ["load_balancer_id"],
            ["load_balancers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("listeners", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_listeners_default_pool_id"), ["default_pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_listeners_load_balancer_id"), ["load_balancer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_listeners_project_id"), ["project_id"], unique=False)

    op.create_table(
        "members",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("pool_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("protocol_port", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("backup", sa.Boolean(), nullable=False),
        sa.Column("subnet_id", sa.String(length=36), nullable=True),
        sa.Column("monitor_address", sa.String(length=64), nullable=True),
        sa.Column("monitor_port", sa.Integer(), nullable=True),
        sa.Column("vnic_type", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pool_id", "address", "protocol_port", name="uq_member_endpoint"),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_members_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_members_project_id"), ["project_id"], unique=False)

    op.create_table(
        "port_ips",
        sa.Column("subnet_id", sa.String(length=36), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"],
            ["ports.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subnet_id"],
            ["subnets.id"],
        ),
        sa.PrimaryKeyConstraint("subnet_id", "ip_address"),
    )
    with op.batch_alter_table("port_ips", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_port_ips_port_id"), ["port_id"], unique=False)

    op.create_table(
        "l7policies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("listener_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(length=36), nullable=False),
        sa.Column("redirect_pool_id", sa.String(length=36), nullable=True),
        sa.Column("redirect_url", sa.String(length=255), nullable=True),
        sa.Column("redirect_prefix", sa.String(length=255), nullable=True),
        sa.Column("redirect_http_code", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["listener_id"],
            ["listeners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["redirect_pool_id"],
            ["pools.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("l7policies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_l7policies_listener_id"), ["listener_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_l7policies_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_l7policies_redirect_pool_id"), ["redirect_pool_id"], unique=False)

    op.create_table(
        "l7rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("l7policy_id", sa.String(length=36), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("type", sa.String(length=36), nullable=False),
        sa.Column("compare_type", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=True),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("invert", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("provisioning_status", sa.String(length=16), nullable=False),
        sa.Column("operating_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["l7policy_id"],
            ["l7policies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("l7rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_l7rules_l7policy_id"), ["l7policy_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_l7rules_project_id"), ["project_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("l7rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_l7rules_project_id"))
        batch_op.drop_index(batch_op.f("ix_l7rules_l7policy_id"))

    op.drop_table("l7rules")
    with op.batch_alter_table("l7policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_l7policies_redirect_pool_id"))
        batch_op.drop_index(batch_op.f("ix_l7policies_project_id"))
        batch_op.drop_index(batch_op.f("ix_l7policies_listener_id"))

    op.drop_table("l7policies")
    with op.batch_alter_table("port_ips", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_port_ips_port_id"))

    op.drop_table("port_ips")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_project_id"))
        batch_op.drop_index(batch_op.f("ix_members_pool_id"))

    op.drop_table("members")
    with op.batch_alter_table("listeners", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_listeners_project_id"))
        batch_op.drop_index(batch_op.f("ix_listeners_load_balancer_id"))
        batch_op.drop_index(batch_op.f("ix_listeners_default_pool_id"))

    op.drop_table("listeners")
    with op.batch_alter_table("health_monitors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_health_monitors_project_id"))

    op.drop_table("health_monitors")
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subnets_project_id"))
        batch_op.drop_index(batch_op.f("ix_subnets_network_id"))

    op.drop_table("subnets")
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ports_project_id"))
        batch_op.drop_index(batch_op.f("ix_ports_network_id"))

    op.drop_table("ports")
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pools_project_id"))
        batch_op.drop_index(batch_op.f("ix_pools_load_balancer_id"))

    op.drop_table("pools")
    op.drop_table("flavors")
    op.drop_table("availability_zones")
    op.drop_table("tags")
    op.drop_table("quotas")
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_networks_project_id"))

    op.drop_table("networks")
    with op.batch_alter_table("load_balancers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_load_balancers_project_id"))

    op.drop_table("load_balancers")
    op.drop_table("flavor_profiles")
    op.drop_table("availability_zone_profiles")
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_amphorae_load_balancer_id"))

    op.drop_table("amphorae")
