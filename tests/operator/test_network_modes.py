"""What each ``commServers.network.mode`` and ``turn.mode`` renders, without a cluster.

HostNetwork, NodePort and LoadBalancer bind one UDP port and advertise an
address outside the pod network; NodePort and LoadBalancer give every
comm-server pod a Service of its own. The NodePort wrapper script is run by
the machine's ``/bin/sh`` (the shell the image has too) to prove the address
it hands the comm server. TURN: the coordinator's settings, and the managed
coturn's Deployment and Service. The load balancer and managed TURN are only
rendered here (no load-balancer controller or coturn image in these tests).
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from broker_operator.manifests import commserver, desired_objects, turn
from broker_operator.naming import ClusterRef
from broker_operator.reconcile import join_host_port, load_balancer_host, pod_index
from broker_operator.spec import SpecError, parse_spec
from tests.operator import schemas
from tests.operator.support import DEPLOY, IMAGE, crd_schema, load_yaml

REF = ClusterRef("demo", "team-a", "0b5e7a3c-1111-2222-3333-444455556666")


def render(**spec: Any) -> list[dict[str, Any]]:
    return desired_objects(REF, parse_spec(REF.name, {"image": IMAGE, **spec}))


def named(items: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [i for i in items if i["kind"] == kind and i["metadata"]["name"] == name]
    return found


def server_container(items: list[dict[str, Any]], name: str = "demo-commserver") -> Any:
    (container,) = named(items, "StatefulSet", name)["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def per_pod_services(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        i
        for i in items
        if i["kind"] == "Service"
        and i["metadata"]["labels"].get(commserver.POD_SERVICE_LABEL) == "true"
    ]


def test_pod_ip_mode_binds_no_fixed_port_and_makes_no_per_pod_service() -> None:
    items = render()
    container = server_container(items)
    assert "--udp-port" not in container["args"]
    assert "--advertise-address" not in container["args"]
    assert container["command"] == ["webrtc-broker"]
    assert [p["protocol"] for p in container["ports"]] == ["TCP"]
    assert per_pod_services(items) == []


def test_host_network_advertises_the_node_address_one_server_per_node() -> None:
    items = render(commServers={"network": {"mode": "HostNetwork", "udpPort": 7601}})
    pod = named(items, "StatefulSet", "demo-commserver")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    # Only host-network pods repel each other: a rollout to another mode can place its
    # pods next to the host-network ones it replaces.
    labels = named(items, "StatefulSet", "demo-commserver")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert labels["webrtc-broker.io/host-network"] == "true"
    assert {
        "key": "webrtc-broker.io/host-network",
        "operator": "In",
        "values": ["true"],
    } in term["labelSelector"]["matchExpressions"]
    pod_ip = named(render(), "StatefulSet", "demo-commserver")["spec"]["template"]
    assert "webrtc-broker.io/host-network" not in pod_ip["metadata"]["labels"]
    container = pod["containers"][0]
    assert container["args"][-4:] == ["--udp-port", "7601", "--advertise-address", "$(HOST_IP)"]
    assert env_of(container)["HOST_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert {"name": "rtc", "containerPort": 7601, "protocol": "UDP"} in container["ports"]
    assert per_pod_services(items) == []


def test_node_port_gives_each_pod_its_own_service_and_port() -> None:
    items = render(
        commServers={
            "replicas": 3,
            "network": {"mode": "NodePort", "nodePortBase": 31000, "udpPort": 7600},
        }
    )
    services = per_pod_services(items)
    assert [s["metadata"]["name"] for s in services] == [
        "demo-commserver-0",
        "demo-commserver-1",
        "demo-commserver-2",
    ]
    for index, service in enumerate(services):
        spec = service["spec"]
        assert spec["type"] == "NodePort"
        assert spec["externalTrafficPolicy"] == "Local"
        assert spec["publishNotReadyAddresses"] is True
        assert spec["selector"] == {
            "app.kubernetes.io/instance": "demo",
            "statefulset.kubernetes.io/pod-name": f"demo-commserver-{index}",
        }
        assert spec["ports"] == [
            {
                "name": "rtc",
                "protocol": "UDP",
                "port": 7600,
                "targetPort": 7600,
                "nodePort": 31000 + index,
            }
        ]
        assert service["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    # Before the StatefulSet: a pod's port exists by the time it advertises it.
    kinds = [(i["kind"], i["metadata"]["name"]) for i in items]
    assert kinds.index(("Service", "demo-commserver-2")) < kinds.index(
        ("StatefulSet", "demo-commserver")
    )
    pod = named(items, "StatefulSet", "demo-commserver")["spec"]["template"]["spec"]
    assert "hostNetwork" not in pod
    container = pod["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    assert container["command"][3:] == ["webrtc-broker"]
    env = env_of(container)
    assert env["NODE_PORT_BASE"] == "31000"
    assert env["POD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert container["args"][-2:] == ["--udp-port", "7600"]


@pytest.mark.parametrize(
    ("host_ip", "pod_index_label", "pod_name", "advertised"),
    [
        ("198.19.255.7", "2", "demo-commserver-2", "198.19.255.7:31002"),
        ("198.19.255.7", "", "demo-commserver-11", "198.19.255.7:31011"),  # before 1.28
        ("fd00::7", "0", "demo-commserver-0", "[fd00::7]:31000"),
    ],
)
def test_node_port_script_advertises_node_address_and_base_plus_index(
    host_ip: str, pod_index_label: str, pod_name: str, advertised: str
) -> None:
    items = render(commServers={"network": {"mode": "NodePort", "nodePortBase": 31000}})
    container = server_container(items)
    script = container["command"][2]
    # The script execs "$0" "$@": printf stands in for the comm server.
    result = subprocess.run(
        ["/bin/sh", "-c", script, "printf", "%s\\n", *container["args"]],
        env={
            "HOST_IP": host_ip,
            "POD_INDEX": pod_index_label,
            "POD_NAME": pod_name,
            "NODE_PORT_BASE": "31000",
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    argv = result.stdout.splitlines()
    assert argv[: len(container["args"])] == container["args"], "arguments passed unchanged"
    assert argv[len(container["args"]) :] == ["--advertise-address", advertised]


def test_hubs_keep_the_pod_network_in_per_pod_service_modes() -> None:
    items = render(
        commServers={"network": {"mode": "NodePort", "nodePortBase": 31000}},
        topology={"mode": "Hub", "hubs": 2},
    )
    hub = server_container(items, "demo-hub")
    assert hub["command"] == ["webrtc-broker"]
    assert "--udp-port" not in hub["args"]
    assert len(per_pod_services(items)) == 2, "servers only"


def test_load_balancer_mode_waits_for_the_address_the_operator_annotates() -> None:
    annotations = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    items = render(
        commServers={
            "replicas": 2,
            "network": {"mode": "LoadBalancer", "serviceAnnotations": annotations},
        }
    )
    services = per_pod_services(items)
    assert [s["spec"]["type"] for s in services] == ["LoadBalancer", "LoadBalancer"]
    assert all(s["metadata"]["annotations"] == annotations for s in services)
    assert all("nodePort" not in s["spec"]["ports"][0] for s in services)
    assert services[1]["spec"]["ports"][0]["port"] == 7591
    pod = named(items, "StatefulSet", "demo-commserver")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "podinfo"]
    (item,) = volume["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == (
        "metadata.annotations['webrtc-broker.io/advertise-address']"
    )
    container = pod["containers"][0]
    assert commserver.ADVERTISE_FILE in container["command"][2]
    assert {"name": "podinfo", "mountPath": "/etc/webrtc-broker/pod", "readOnly": True} in (
        container["volumeMounts"]
    )
    assert container["startupProbe"]["failureThreshold"] * 5 >= 3600, "an hour to get one"


def test_load_balancer_address_as_the_operator_reads_it() -> None:
    assert load_balancer_host(None) is None
    assert load_balancer_host({"status": {"loadBalancer": {}}}) is None
    status = {"loadBalancer": {"ingress": [{"hostname": "lb.example.org"}, {"ip": "203.0.113.9"}]}}
    assert load_balancer_host({"status": status}) == "lb.example.org"
    assert join_host_port("203.0.113.9", 7591) == "203.0.113.9:7591"
    assert join_host_port("2001:db8::9", 7591) == "[2001:db8::9]:7591"
    labels = {"apps.kubernetes.io/pod-index": "3"}
    assert pod_index({"name": "demo-commserver-3", "labels": labels}) == 3
    assert pod_index({"name": "demo-commserver-12"}) == 12
    assert pod_index({"name": "odd"}) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {
                "commServers": {
                    "replicas": 5,
                    "network": {"mode": "NodePort", "nodePortBase": 32765},
                }
            },
            "nodePortBase (32765) + 5 comm servers go beyond NodePort 32767",
        ),
        (
            {"commServers": {"network": {"mode": "NodePort", "nodePortBase": 29999}}},
            "greater than or equal to 30000",
        ),
        (
            {
                "turn": {
                    "mode": "Managed",
                    "secretRef": {"name": "t"},
                    "managed": {"allowedPeerNetworks": ["10.0.0.1/8"]},
                }
            },
            "not a network",
        ),
    ],
)
def test_impossible_network_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec("demo", {"image": IMAGE, **spec})
    assert message in str(caught.value)


def test_external_turn_reaches_the_coordinator_with_its_secret() -> None:
    items = render(
        turn={
            "mode": "External",
            "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"],
            "secretRef": {"name": "turn-secret"},
            "ttlSeconds": 300,
        }
    )
    (container,) = named(items, "Deployment", "demo-coordinator")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(container)
    assert json.loads(env["WEBRTC_BROKER_COORDINATOR_TURN_URLS"]) == [
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349",
    ]
    assert env["WEBRTC_BROKER_COORDINATOR_TURN_SECRET"] == {
        "secretKeyRef": {"name": "turn-secret", "key": "secret"}
    }
    assert env["WEBRTC_BROKER_COORDINATOR_TURN_TTL"] == "300"
    assert not [i for i in items if i["metadata"]["name"] == "demo-turn"]


def test_managed_turn_runs_coturn_relaying_only_to_the_pod_network() -> None:
    items = render(
        turn={
            "mode": "Managed",
            "secretRef": {"name": "turn-secret", "key": "shared"},
            "managed": {
                "serviceType": "NodePort",
                "allowedPeerNetworks": ["10.244.0.0/16", "fd00:10:244::/56"],
                "relayPortMin": 50000,
                "relayPortMax": 50100,
                "tlsSecretRef": {"name": "turn-tls"},
            },
        }
    )
    deployment = named(items, "Deployment", "demo-turn")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert "--use-auth-secret" in args
    assert not any("static-auth-secret" in a for a in args), "the secret stays off argv"
    assert env_of(container)["TURN_SECRET"] == {
        "secretKeyRef": {"name": "turn-secret", "key": "shared"}
    }
    assert args.index("--denied-peer-ip=0.0.0.0-255.255.255.255") < args.index(
        "--allowed-peer-ip=10.244.0.0-10.244.255.255"
    )
    assert "--allowed-peer-ip=fd00:10:244::-fd00:10:244:ff:ffff:ffff:ffff:ffff" in args
    assert "--min-port=50000" in args and "--max-port=50100" in args
    assert "--tls-listening-port=5349" in args and "--no-tls" not in args
    assert {"name": "tls", "secret": {"secretName": "turn-tls", "defaultMode": 0o440}} in pod[
        "volumes"
    ]
    service = named(items, "Service", "demo-turn")
    assert service["spec"]["type"] == "NodePort"
    assert sorted((p["port"], p["protocol"]) for p in service["spec"]["ports"]) == [
        (3478, "TCP"),
        (3478, "UDP"),
        (5349, "TCP"),
    ]
    (coordinator,) = named(items, "Deployment", "demo-coordinator")["spec"]["template"]["spec"][
        "containers"
    ]
    urls = json.loads(env_of(coordinator)["WEBRTC_BROKER_COORDINATOR_TURN_URLS"])
    assert urls == turn.turn_urls(
        REF,
        parse_spec(
            "demo",
            {
                "image": IMAGE,
                **{
                    "turn": {
                        "mode": "Managed",
                        "secretRef": {"name": "x"},
                        "managed": {"allowedPeerNetworks": ["10.0.0.0/8"]},
                    }
                },
            },
        ),
    )
    assert urls[0] == "turn:demo-turn.team-a.svc:3478?transport=udp"


def test_managed_turn_script_writes_the_secret_to_a_private_file(tmp_path: Any) -> None:
    config = tmp_path / "turnserver.conf"
    script = turn.SCRIPT.replace(turn.CONFIG_FILE, str(config))
    result = subprocess.run(
        ["/bin/sh", "-c", script, "echo", "--use-auth-secret"],
        env={"TURN_SECRET": "s3cr%t"},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert result.stdout.split() == ["-c", str(config), "--use-auth-secret"]
    assert config.read_text() == "static-auth-secret=s3cr%t\n"
    assert config.stat().st_mode & 0o077 == 0


def test_every_example_is_accepted_by_the_crd_and_the_operator() -> None:
    files = sorted((DEPLOY / "examples").glob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        for body in load_yaml(path):
            assert schemas.validate_custom(crd_schema(), body) == [], path.name
            defaulted = schemas.apply_defaults(crd_schema(), copy.deepcopy(body))
            parse_spec(body["metadata"]["name"], defaulted["spec"])
