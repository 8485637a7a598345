"""A client behind a NAT reaches comm servers on the real node in NodePort and HostNetwork mode.

The operator (a local process with ``deploy/rbac.yaml``'s token) runs one
BrokerCluster on the node; its coordinator is reached through its NodePort on
the node's address, as a browser outside the cluster would. One client runs
behind a real MASQUERADE router (``tests/net/topology.py``: a client namespace,
a router namespace, an "internet" bridge on the host): its private address
routes nowhere, it reaches the node's address only through the router, and the
comm server only ever sees the router's public address. Another client runs on
the host. This proves that:

1. ``network.mode: NodePort``: every comm-server pod gets a NodePort Service of
   its own (``nodePortBase + index``, ``externalTrafficPolicy: Local``); each
   server advertises the node's address and its own NodePort (listed in the
   BrokerCluster's ``status.advertised``, as ``kubectl get bkc -o yaml`` shows
   it, and in the server's ``/status``); the NAT'd client's ICE pair ends at
   that address and port, and reliable and unreliable messages cross both ways
   between it and the host's client; ``kubectl scale bkc`` to 3 adds a Service
   and NodePort for the third pod, back to 2 deletes it;
2. switching the same cluster to ``network.mode: HostNetwork`` (one server: one
   per node) replaces the pod with one on the node's network, bound to
   ``udpPort`` and advertising the node's address with it; the per-pod Services
   are deleted by the operator; the exchange crosses the NAT again. The comm
   server sends from one wildcard UDP socket, so the kernel picks the source
   address of its replies by routing: the route towards the "internet" gets the
   node's address as its source, as on a node whose clients are reached from
   the address it advertises (without it the NAT drops the replies, which come
   from the bridge's address: a limit of HostNetwork mode on multi-homed
   nodes, which NodePort mode does not have, since conntrack rewrites the
   replies' source there).

3. ``turn.mode: Managed`` with the comm servers back on ``PodIP`` (relay only,
   "TURN only"): the operator runs coturn (an image made here from Debian's
   ``coturn``, ``tests/k8s/turnimage.py``) behind a NodePort Service, relaying
   only to the pod network; with ``turn.urls`` set to the node's address and the
   Service's NodePorts, the coordinator hands out short-lived credentials for
   it. A client behind a NAT that drops every UDP packet (only TCP leaves its
   site) reaches a comm server through TURN over TCP, and a relay-only client on
   the host (``ice_transport_policy="relay"``) through TURN over UDP; both
   sessions' local candidates are relayed, and messages cross both ways; an
   allocation with the same credentials may not relay to the node's own address
   (outside the pod network): coturn answers 403.

4. ``network.mode: LoadBalancer`` (one server): no load-balancer controller runs
   here, so the test writes the per-pod Service's ``status.loadBalancer.ingress``
   (an address of the host's "internet" bridge) as a controller would, and
   kube-proxy, which forwards a Service's ingress addresses, plays the load
   balancer. The operator annotates the pod with that address and ``udpPort``;
   the pod's wrapper, which waited for the annotation through the downward API,
   starts the comm server advertising it; the NAT'd client's pair ends there and
   messages cross both ways.

Printed: the advertised addresses, the selected ICE pairs, the phases' times.
The image must hold the comm server's single-port ICE (``--udp-port``,
``--advertise-address``); the ``broker_image`` fixture rebuilds it from the
sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aioice import stun
from aioice.turn import create_turn_endpoint

from broker_operator import GROUP, PLURAL, VERSION
from broker_operator.naming import COMMSERVER
from tests.e2e.helpers import receive, subscribe
from tests.k8s import turnimage
from tests.k8s.clients import (
    NAME,
    Deployed,
    KubeBroker,
    broker_cluster_body,
    broker_from_host,
    deployed_cluster,
    ready,
)
from tests.k8s.cluster import ControlPlane
from tests.k8s.node import POD_CIDR, TOLERATION, Node
from tests.k8s.workloads import Phases
from tests.net import topology
from tests.net.harness import PeerProcess, Processes, exchange
from tests.net.peer import selected_pair
from tests.net.topology import Internet, NattedSite
from tests.operator.support import until
from webrtc_broker.client import BrokerClient

pytestmark = pytest.mark.timeout(900)

NODE_PORT_BASE = 31590
"""The per-pod NodePorts of this test's comm servers: 31590 and 31591."""
TOPIC_IN, TOPIC_OUT = "to-natted", "to-host"


def free_port(kind: int) -> int:
    """A port free on the host now: in HostNetwork mode the pod binds it on the node."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def udp_port() -> int:
    """The comm servers' ``udpPort``: free on the host now, since in HostNetwork mode
    the pods bind it on the node."""
    return free_port(socket.SOCK_DGRAM)


@pytest.fixture(scope="module")
def deployed(
    control_plane: ControlPlane,
    node: Node,
    broker_image: str,
    tmp_path_factory: pytest.TempPathFactory,
    udp_port: int,
) -> Iterator[Deployed]:
    """The operator and a BrokerCluster in NodePort mode (2 comm servers); the
    namespaces (and with them pods and Services) removed at the end."""
    workdir = tmp_path_factory.mktemp("network-modes-e2e")
    http_port = free_port(socket.SOCK_STREAM)
    body = broker_cluster_body(broker_image, replicas=2)
    servers = body["spec"]["commServers"]
    servers["httpPort"] = http_port
    servers["network"] = {"mode": "NodePort", "nodePortBase": NODE_PORT_BASE, "udpPort": udp_port}
    with deployed_cluster(
        control_plane, node.address, node.socket, workdir, body, http_port=http_port
    ) as deployed:
        yield deployed


@pytest.fixture
async def broker(deployed: Deployed, request: pytest.FixtureRequest) -> AsyncIterator[KubeBroker]:
    async with broker_from_host(deployed, request) as kube:
        yield kube


@pytest.fixture
def site() -> Iterator[tuple[Internet, NattedSite]]:
    """A client namespace behind a MASQUERADE router on an "internet" bridge of the host."""
    with topology.internet() as net, topology.natted_site(net) as natted:
        yield net, natted


# --- helpers ----------------------------------------------------------------


async def cluster(broker: KubeBroker) -> dict[str, Any]:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{broker.namespace}/{PLURAL}/{NAME}"
    return await broker.api(path)


async def patch_cluster(broker: KubeBroker, spec: dict[str, Any]) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{broker.namespace}/{PLURAL}/{NAME}"
    answer = await asyncio.to_thread(
        broker.admin.patch,
        path,
        json={"spec": spec},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text


async def advertised_in_yaml(broker: KubeBroker) -> dict[str, str]:
    """``status.advertised`` as ``kubectl get bkc -o yaml`` shows it: pod -> address."""
    text = await broker.kubectl("get", "bkc", NAME, "-o", "yaml")
    status = yaml.safe_load(text).get("status") or {}
    return {e["name"]: e.get("address", "") for e in status.get("advertised") or []}


async def server_status(broker: KubeBroker, pod: dict[str, Any], port: int) -> dict[str, Any]:
    """A comm server's ``/status`` at its pod address (the node's in HostNetwork mode)."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        answer = await http.get(f"http://{pod['status']['podIP']}:{port}/status")
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body


async def pod_services(broker: KubeBroker) -> dict[str, int]:
    """The cluster's per-pod Services: name -> nodePort."""
    listed = await broker.api(
        f"/api/v1/namespaces/{broker.namespace}/services",
        labelSelector=f"app.kubernetes.io/instance={NAME},webrtc-broker.io/pod-service=true",
    )
    return {
        s["metadata"]["name"]: int(s["spec"]["ports"][0].get("nodePort") or 0)
        for s in listed["items"]
        if not s["metadata"].get("deletionTimestamp")
    }


async def wait_advertised(broker: KubeBroker, wanted: dict[str, str]) -> None:
    async def shown() -> bool:
        return await advertised_in_yaml(broker) == wanted

    try:
        await until(shown, timeout=120, interval=1)
    except AssertionError:
        print(f"wanted {wanted}, shown {await advertised_in_yaml(broker)}")
        raise


async def cross_the_nat(
    broker: KubeBroker, natted: NattedSite, workdir: Path, advertised: set[str]
) -> None:
    """A client behind the NAT and one on the host exchange both ways; the NAT'd
    client's selected pair ends at one of the ``advertised`` addresses."""
    async with Processes.running(workdir) as processes:
        outside: PeerProcess = await processes.peer(
            "natted", broker.url, prefix=natted.client.command()
        )
        host: PeerProcess = await processes.peer("host", broker.url)
        started = time.monotonic()
        far = await outside.ok("connect", name="far", timeout=30, wait=30)
        print(f"NAT'd client: connected in {time.monotonic() - started:.2f} s, pair {far['pair']}")
        near = await host.ok("connect", name="near", timeout=30, wait=30)
        print(f"host client: server {near['server']}, pair {near['pair']}")
        remote = far["pair"].rpartition(" ")[2]
        assert remote in advertised, (far["pair"], advertised)
        await outside.ok("subscribe", name="far", topics=[TOPIC_IN])
        await host.ok("subscribe", name="near", topics=[TOPIC_OUT])

        async def routed() -> bool:
            # Subscriptions reach the other server through the mesh: probe until one lands.
            await host.ok("publish", name="near", topic=TOPIC_IN, body="probe", reliable=True)
            got = await outside.request("receive", name="far", count=1, timeout=1, wait=1)
            await outside.ok("publish", name="far", topic=TOPIC_OUT, body="probe", reliable=True)
            got_back = await host.request("receive", name="near", count=1, timeout=1, wait=1)
            return bool(got.get("ok") and got_back.get("ok"))

        await until(routed, timeout=60, interval=0.5)
        await asyncio.sleep(1.0)
        for peer, name in ((outside, "far"), (host, "near")):  # leftover probes
            while (await peer.request("receive", name=name, count=1, timeout=0.5, wait=1))["ok"]:
                pass
        crossed = await exchange(host, "near", outside, "far", TOPIC_IN)
        crossed += await exchange(outside, "far", host, "near", TOPIC_OUT)
        print(f"crossed the NAT: {len(crossed)} messages: {crossed}")
        assert len(crossed) == 4


# --- the tests ----------------------------------------------------------------


async def test_node_port_mode_per_pod_services_reach_a_natted_client(
    broker: KubeBroker, deployed: Deployed, site: tuple[Internet, NattedSite], tmp_path: Path
) -> None:
    phases = Phases("NodePort")
    net, natted = site
    await broker.wait_servers(2, timeout=600)
    phases.mark("2 comm servers ready and meshed")
    services = await pod_services(broker)
    assert services == {
        f"{NAME}-{COMMSERVER}-0": NODE_PORT_BASE,
        f"{NAME}-{COMMSERVER}-1": NODE_PORT_BASE + 1,
    }
    node = deployed.node_address
    wanted = {f"{NAME}-{COMMSERVER}-{i}": f"{node}:{NODE_PORT_BASE + i}" for i in range(2)}
    await wait_advertised(broker, wanted)
    print(f"status.advertised: {wanted}")
    for pod in await broker.pods(COMMSERVER):
        status = await server_status(broker, pod, deployed.http_port)
        shown = {k: v for k, v in status.items() if k in ("ice", "udp", "candidates", "network")}
        print(f"{pod['metadata']['name']} /status: {shown or sorted(status)}")
    print(f"NAT'd client {natted.client_address} behind {natted.public_address} on {net.network}")
    await cross_the_nat(broker, natted, tmp_path, set(wanted.values()))
    phases.mark("exchange across the NAT")
    # The per-pod Services follow the replicas: one more with a scale-up, gone again after.
    await broker.scale(3)
    await broker.wait_servers(3, timeout=300)
    third = f"{NAME}-{COMMSERVER}-2"
    assert (await pod_services(broker)).get(third) == NODE_PORT_BASE + 2
    await wait_advertised(broker, {**wanted, third: f"{node}:{NODE_PORT_BASE + 2}"})
    phases.mark("scaled to 3: a third Service and NodePort, advertised")
    await broker.scale(2)
    await broker.wait_servers(2, timeout=300)

    async def two_services() -> bool:
        return set(await pod_services(broker)) == set(wanted)

    await until(two_services, timeout=120, interval=1)
    await wait_advertised(broker, wanted)
    phases.mark("scaled back to 2: the third Service deleted")
    print(phases.summary())


async def test_host_network_mode_advertises_the_node_to_a_natted_client(
    broker: KubeBroker,
    deployed: Deployed,
    site: tuple[Internet, NattedSite],
    tmp_path: Path,
    udp_port: int,
) -> None:
    phases = Phases("HostNetwork")
    net, natted = site
    # The node's address is on an interface of its own here (wbk8s-*), while the NAT'd
    # site is reached through the internet bridge, whose address the kernel would put
    # on the replies of the comm server's one wildcard UDP socket: the router's
    # conntrack would not match them. A node reaches its clients from the address it
    # advertises (its one interface, or routes with that source), so the bridge's
    # route is given the node's address as its source.
    topology.run(
        "ip", "route", "replace", str(net.network), "dev", net.bridge,
        "scope", "link", "src", deployed.node_address,
    )  # fmt: skip
    await patch_cluster(
        broker, {"commServers": {"replicas": 1, "network": {"mode": "HostNetwork"}}}
    )

    async def on_host_network() -> bool:
        pods = await broker.pods(COMMSERVER)
        return (
            len(pods) == 1
            and bool(pods[0]["spec"].get("hostNetwork"))
            and ready(pods[0])
            and not pods[0]["metadata"].get("deletionTimestamp")
        )

    await until(on_host_network, timeout=300, interval=1)
    phases.mark("the comm server on the node's network")

    async def services_gone() -> bool:
        return await pod_services(broker) == {}

    await until(services_gone, timeout=120, interval=1)
    node = deployed.node_address
    wanted = {f"{NAME}-{COMMSERVER}-0": f"{node}:{udp_port}"}
    await wait_advertised(broker, wanted)
    print(f"status.advertised: {wanted}; per-pod Services deleted")
    (pod,) = await broker.pods(COMMSERVER)
    assert pod["status"]["podIP"] == node
    status = await server_status(broker, pod, deployed.http_port)
    print(f"{pod['metadata']['name']} /status: {status['ice']}")

    async def registered() -> bool:
        return [name for name, _ in await broker.servers()] == [f"{NAME}-{COMMSERVER}-0"]

    await until(registered, timeout=120, interval=0.5)
    await cross_the_nat(broker, natted, tmp_path, set(wanted.values()))
    phases.mark("exchange across the NAT")
    print(phases.summary())


async def start_managed_turn(
    broker: KubeBroker, deployed: Deployed, phases: Phases
) -> list[dict[str, Any]]:
    """coturn run by the operator, comm servers back on the pod network; the TURN URLs
    the coordinator hands out once they are set (the node's address, the NodePorts)."""
    coturn = await asyncio.to_thread(turnimage.import_into, deployed.containerd)
    phases.mark(f"coturn image {coturn} in the node's containerd")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "turn-secret"},
        "stringData": {"secret": "a-turn-rest-shared-secret-for-the-test-0123456789"},
    }
    answer = await asyncio.to_thread(
        broker.admin.post, f"/api/v1/namespaces/{broker.namespace}/secrets", json=secret
    )
    assert answer.status_code == 201, answer.text
    small = {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}
    managed = {
        "image": coturn,
        "serviceType": "NodePort",
        "allowedPeerNetworks": [POD_CIDR],
        "tolerations": [dict(TOLERATION)],
        "resources": small,
    }
    await patch_cluster(
        broker,
        {
            "commServers": {"replicas": 2, "network": {"mode": "PodIP"}},
            "turn": {"mode": "Managed", "secretRef": {"name": "turn-secret"}, "managed": managed},
        },
    )

    async def turn_ready() -> bool:
        pods = await broker.pods("turn")
        return len(pods) == 1 and ready(pods[0])

    await until(turn_ready, timeout=180, interval=1)
    phases.mark("coturn ready")
    service = await broker.api(f"/api/v1/namespaces/{broker.namespace}/services/{NAME}-turn")
    ports = {p["name"]: int(p["nodePort"]) for p in service["spec"]["ports"]}
    node = deployed.node_address
    urls = [
        f"turn:{node}:{ports['turn-udp']}?transport=udp",
        f"turn:{node}:{ports['turn-tcp']}?transport=tcp",
    ]
    # Where clients reach coturn is known once its Service has ports: set it, as a user
    # sets the address of the load balancer in front of it.
    await patch_cluster(broker, {"turn": {"urls": urls}})

    def turn_urls(pod: dict[str, Any]) -> str | None:
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        return env.get("WEBRTC_BROKER_COORDINATOR_TURN_URLS")

    async def handed_out() -> bool:
        # Read from the pods, not /ice-servers: the coordinator rate-limits credentials per
        # address, and every client here reaches it from the node's address. Every replica
        # the spec asks for runs with the URLs, and none of before the rollout is left.
        wanted = int((await cluster(broker))["spec"]["coordinator"]["replicas"])
        pods = await broker.pods("coordinator")
        pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return len(pods) == wanted and all(
            ready(p) and turn_urls(p) == json.dumps(urls) for p in pods
        )

    await until(handed_out, timeout=180, interval=1)
    await broker.find_node_port()

    async def fetched() -> Any:
        # The replaced coordinator's endpoint reaches kube-proxy a moment after it is ready.
        with contextlib.suppress(httpx.TransportError):
            answer = await broker.http.get(f"{broker.http_url}/ice-servers")
            assert answer.status_code == 200, answer.text
            return answer.json()
        return None

    body = await until(fetched, timeout=60, interval=1)
    servers = body.get("iceServers", body) if isinstance(body, dict) else body
    assert [url for server in servers for url in server["urls"]] == urls, body
    assert all(server.get("username") and server.get("credential") for server in servers)
    print(f"/ice-servers: {[(s['urls'], s['username']) for s in servers]}")
    await broker.wait_servers(2, timeout=300)
    phases.mark(f"coordinator hands out {urls}; 2 comm servers on the pod network")
    return list(servers)


async def exchange_through_turn(outside: PeerProcess, near: BrokerClient) -> int:
    """Messages both ways between the peer's ``far`` and ``near``; how many crossed."""
    await subscribe(near, [TOPIC_OUT])
    await outside.ok("subscribe", name="far", topics=[TOPIC_IN])

    async def routed() -> bool:
        near.publish(TOPIC_IN, b"probe", reliable=True)
        got = await outside.request("receive", name="far", count=1, timeout=1, wait=1)
        await outside.ok("publish", name="far", topic=TOPIC_OUT, body="probe", reliable=True)
        with contextlib.suppress(TimeoutError):
            await receive(near, timeout=1)
            return bool(got.get("ok"))
        return False

    await until(routed, timeout=60, interval=0.5)
    await asyncio.sleep(1.0)
    while (await outside.request("receive", name="far", count=1, timeout=0.5))["ok"]:
        pass
    with contextlib.suppress(TimeoutError):
        while True:
            await receive(near, timeout=0.5)
    crossed = 0
    for reliable in (True, False):
        body = f"near -> far reliable={reliable}"
        near.publish(TOPIC_IN, body.encode(), reliable=reliable)
        reply = await outside.ok("receive", name="far", count=1, timeout=10)
        assert [m["body"] for m in reply["messages"]] == [body]
        body = f"far -> near reliable={reliable}"
        await outside.ok("publish", name="far", topic=TOPIC_OUT, body=body, reliable=reliable)
        got = await receive(near, timeout=10)
        assert got.body == body.encode(), got
        crossed += 2
    return crossed


async def test_managed_turn_relays_clients_to_comm_servers_on_the_pod_network(
    broker: KubeBroker, deployed: Deployed, tmp_path: Path
) -> None:
    phases = Phases("Managed TURN")
    servers = await start_managed_turn(broker, deployed, phases)
    (tcp,) = [url for s in servers for url in s["urls"] if url.endswith("transport=tcp")]
    with topology.internet() as net, topology.natted_site(net, block_udp=True) as natted:
        print(f"UDP-blocked client {natted.client_address} behind {natted.public_address}")
        async with Processes.running(tmp_path) as processes:
            outside = await processes.peer(
                "udp-blocked", broker.url, prefix=natted.client.command()
            )
            # aiortc gathers through the first TURN URL only: this client is given the
            # TCP one (its UDP would be dropped), the host's client the UDP one.
            far = await outside.ok("connect", name="far", timeout=45, wait=45, turn_only=tcp)
            print(f"UDP-blocked client: pair {far['pair']}")
            assert far["pair"].startswith("relay "), far
            near = await BrokerClient.connect(
                broker.url, "near", timeout=45, ice_transport_policy="relay"
            )
            try:
                print(f"relay-only host client: pair {selected_pair(near)}")
                assert selected_pair(near).startswith("relay "), selected_pair(near)
                crossed = await exchange_through_turn(outside, near)
                print(f"crossed through TURN: {crossed} messages")
                assert crossed == 4
            finally:
                await near.close()
    phases.mark("exchange through coturn")
    await relay_refused_outside_the_pod_network(servers[0], deployed.node_address)
    phases.mark("a relay to the node's own address refused")
    print(phases.summary())


class TurnProbe(asyncio.DatagramProtocol):
    """What a TURN allocation reports: the errors of its sends."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


async def relay_refused_outside_the_pod_network(server: dict[str, Any], target: str) -> None:
    """With the coordinator's credentials, an allocation on the managed coturn may not
    relay to ``target`` (outside ``allowedPeerNetworks``): coturn answers 403."""
    (udp,) = [url for url in server["urls"] if url.endswith("transport=udp")]
    host, _, port = udp.removeprefix("turn:").split("?")[0].rpartition(":")
    transport, probe = await create_turn_endpoint(
        TurnProbe, (host, int(port)), server["username"], server["credential"]
    )
    try:
        print(f"TURN allocation {transport.get_extra_info('sockname')}; relaying to {target}")
        transport.sendto(b"probe", (target, 10250))  # the kubelet's port on the node
        refused = await asyncio.wait_for(probe.errors.get(), 20)
        assert isinstance(refused, stun.TransactionFailed), refused
        code, reason = refused.response.attributes["ERROR-CODE"]
        print(f"coturn refused the relay to {target}: {code} {reason}")
        assert code == 403, refused
    finally:
        transport.close()


async def test_load_balancer_mode_advertises_the_address_its_service_reports(
    broker: KubeBroker,
    deployed: Deployed,
    site: tuple[Internet, NattedSite],
    tmp_path: Path,
    udp_port: int,
) -> None:
    """No load-balancer controller runs here: the test writes the Service's
    ``status.loadBalancer.ingress`` itself, as one would, with an address of the
    host's "internet" bridge, and kube-proxy, which forwards a Service's ingress
    addresses to its endpoints, plays the load balancer."""
    phases = Phases("LoadBalancer")
    net, natted = site
    balancer = net.allocate()
    topology.run("ip", "addr", "add", f"{balancer}/32", "dev", net.bridge)
    turn_off = {"mode": "None", "urls": None, "secretRef": None, "managed": None}
    await patch_cluster(
        broker,
        {"commServers": {"replicas": 1, "network": {"mode": "LoadBalancer"}}, "turn": turn_off},
    )
    name = f"{NAME}-{COMMSERVER}-0"
    path = f"/api/v1/namespaces/{broker.namespace}/services/{name}"

    async def load_balancer_service() -> bool:
        service = await broker.api(path)
        return bool(service["spec"]["type"] == "LoadBalancer")

    await until(load_balancer_service, timeout=120, interval=1)
    answer = await asyncio.to_thread(
        broker.admin.patch,
        f"{path}/status",
        json={"status": {"loadBalancer": {"ingress": [{"ip": balancer}]}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    phases.mark(f"{name}: a LoadBalancer Service, its ingress {balancer} reported")
    advertised = f"{balancer}:{udp_port}"

    async def annotated_and_ready() -> bool:
        pods = await broker.pods(COMMSERVER)
        if len(pods) != 1 or pods[0]["metadata"].get("deletionTimestamp"):
            return False
        annotations = pods[0]["metadata"].get("annotations") or {}
        shown = annotations.get("webrtc-broker.io/advertise-address")
        return bool(shown == advertised and ready(pods[0]))

    await until(annotated_and_ready, timeout=300, interval=1)
    phases.mark("the operator annotated the pod; its comm server started and is ready")
    await wait_advertised(broker, {name: advertised})
    (pod,) = await broker.pods(COMMSERVER)
    status = await server_status(broker, pod, deployed.http_port)
    print(f"status.advertised: {{{name!r}: {advertised!r}}}; /status: {status['ice']}")
    assert status["ice"]["candidates"] == [advertised]
    await until(lambda: registered_only(broker, [name]), timeout=120, interval=0.5)
    await cross_the_nat(broker, natted, tmp_path, {advertised})
    phases.mark("exchange across the NAT through the load balancer's address")
    print(phases.summary())


async def registered_only(broker: KubeBroker, names: list[str]) -> bool:
    return sorted(name for name, _ in await broker.servers()) == sorted(names)
