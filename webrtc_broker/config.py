"""Configuration of every service, in one typed place.

Each service reads a pydantic-settings model: defaults here, overridden by
environment variables (``WEBRTC_BROKER_COORDINATOR_PORT=9000``), overridden by
command-line flags (the CLI passes the flags it was given as keyword
arguments). Defaults are chosen so that ``webrtc-broker up`` works on a laptop
with no configuration at all.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from webrtc_broker import limits
from webrtc_broker.tokens import check_secret

MIB = 1024 * 1024
KIB = 1024

MAX_FRAME_BYTES = limits.MAX_FRAME_BYTES
"""Largest data-channel message a comm server takes from a client by default: the bound
both SDKs hold their frames to (webrtc_broker.limits), so nothing they send is refused."""

SelectorName = Literal["random", "round-robin", "least-clients"]
ServerRole = Literal["server", "hub"]
ClientAuth = Literal["none", "jwt"]
BatchMode = Literal["idle", "window"]
"""When a comm server's batched frames leave (see :mod:`webrtc_broker.rtc.writer`):
``idle`` once the server has nothing else queued, at most ``batch_window`` after the
first; ``window`` always ``batch_window`` after the first."""


VIRTUAL_INTERFACES = (
    "lo",
    "docker*",
    "br-*",
    "cni*",
    "cbr*",
    "flannel*",
    "vxlan*",
    "kube-ipvs*",
    "kube-bridge",
    "cali*",
    "cilium*",
    "weave*",
    "tunl*",
    "virbr*",
    "lxc*",
    "genev_sys*",
    "nodelocaldns",
)
"""Interfaces whose addresses no peer outside this host can reach, or that only route inside
a cluster: loopback, container bridges, CNI and overlay devices, the IPVS dummy that holds
every Service address. Offered as candidates, they cost each connection checks that fail."""


def parse_port_range(value: str) -> tuple[int, int]:
    """``"LOW-HIGH"`` as (low, high); ValueError naming what is wrong."""
    low, sep, high = value.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"not a port range LOW-HIGH: {value!r}")
    first, last = int(low), int(high)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"port range {value!r} must be 1 <= LOW <= HIGH <= 65535")
    return first, last


def parse_host_port(value: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port or None)."""
    host, port_text = value, ""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"not HOST[:PORT]: {value!r}")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    if not host:
        raise ValueError(f"no host in {value!r}")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"not a port in {value!r}")
    return host, int(port_text)


class IceServer(BaseModel):
    """A STUN or TURN server, shaped like WebRTC's ``RTCIceServer`` dictionary.

    Environment variables carry a JSON list of these
    (``[{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]``).
    """

    model_config = ConfigDict(frozen=True)

    urls: list[str] = Field(min_length=1, description="stun:, stuns:, turn: or turns: URLs")
    username: str | None = Field(None, description="TURN username")
    credential: SecretStr | None = Field(None, description="TURN password")

    def to_json(self) -> dict[str, Any]:
        """The browser's ``RTCIceServer`` shape, credential revealed, null fields omitted."""
        body: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            body["username"] = self.username
        if self.credential is not None:
            body["credential"] = self.credential.get_secret_value()
        return body


class ClientAuthSettings(BaseSettings):
    """How clients prove who they are; the coordinator checks the token in
    ``/connect``'s URL and each comm server the one in AUTH, with the same key."""

    client_auth: ClientAuth = Field(
        "none", description="How clients are checked: 'none' (anyone) or 'jwt' (signed tokens)"
    )
    client_jwt_secret: SecretStr | None = Field(
        None, description="Shared HS256 key of client tokens (at least 32 bytes) for 'jwt'"
    )

    @model_validator(mode="after")
    def _client_auth_is_complete(self) -> Self:
        """JWT client auth needs a key long enough for HS256 (see :mod:`webrtc_broker.tokens`)."""
        if self.client_auth == "jwt":
            if self.client_jwt_secret is None:
                raise ValueError("client_auth 'jwt' needs client_jwt_secret")
            check_secret(self.client_jwt_secret.get_secret_value())
        return self


def require_server_secret(
    client_auth: ClientAuth, server_secret: SecretStr | None, env_prefix: str
) -> None:
    """Refuse client authentication without a server secret.

    Clients learn their servers from the coordinator alone, and every
    registered server is handed clients, their tokens and every topic. Without
    a server secret anyone may register on ``/discover``, so checking clients
    would protect nothing: the combination is refused instead of allowed.
    """
    if client_auth == "none":
        return
    if server_secret is None or not server_secret.get_secret_value():
        raise ValueError(
            f"--client-auth {client_auth} needs --server-secret "
            f"({env_prefix}SERVER_SECRET), the same on the coordinator and every comm server: "
            "without it anyone can register as a comm server and receive the clients, their "
            "tokens and every topic"
        )


class CoordinatorConfig(ClientAuthSettings):
    """The coordinator: WebSocket entry point for clients and comm servers."""

    model_config = SettingsConfigDict(env_prefix="WEBRTC_BROKER_COORDINATOR_", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind")
    port: int = Field(9090, ge=0, le=65535, description="Port to bind (0 picks a free one)")
    server_secret: SecretStr | None = Field(
        None, description="Shared secret comm servers must present; unset accepts any server"
    )
    selector: SelectorName = Field("random", description="How servers are ordered for a client")
    alias_spaces: int = Field(
        1,
        description="Replicas' disjoint alias spaces (a divisor of 1000: 1, 2, 4, 5, 8, 10, 20,"
        " 25, 40, 50, 100, ...); every replica of one deployment uses the same value",
    )
    replica_id: int | None = Field(
        None,
        ge=0,
        description="This replica's alias space, in [0, alias_spaces); unset: a random one"
        " (distinct ids guarantee disjoint aliases, random ones only make a clash unlikely)",
    )
    ready_needs_server: bool = Field(
        False,
        description="Answer /readyz 200 only while at least one comm server is registered",
    )
    ping_interval: float = Field(20.0, gt=0, description="Seconds between WebSocket pings")
    ping_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a pong")
    max_message_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest WebSocket message accepted"
    )
    send_queue_frames: int = Field(
        1024, ge=1, description="Frames queued for one slow WebSocket before it is closed"
    )
    max_pending_connects: int = Field(
        4,
        ge=1,
        description="CONNECTs one client connection may have unanswered by their servers; "
        "more are dropped",
    )
    signal_rate: float = Field(
        20.0,
        ge=0,
        description="Frames per second one client connection may send, sustained (0: no limit); "
        "excess frames are dropped. An SDK sends a CONNECT, an ANSWER and a few dozen ICE "
        "candidates per connection",
    )
    signal_burst: int = Field(
        100, ge=1, description="Frames a client connection may send at once above that rate"
    )
    subject_signal_rate: float = Field(
        100.0,
        ge=0,
        description="Frames per second all connections of one token subject may send together "
        "(0: no limit); applies when client tokens are verified (client_auth jwt)",
    )
    subject_signal_burst: int = Field(
        500, ge=1, description="Frames one token subject may send at once above that rate"
    )
    client_queue_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a comm server's outbound queue that frames from clients may fill; "
        "a client's frame beyond it is dropped, and the server's connection stays open",
    )
    handshake_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a TCP connection has to deliver a complete HTTP request "
        "(a WebSocket upgrade included); a slower one is closed",
    )
    client_idle_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds a client WebSocket may go without a relayed frame until a server "
        "offers it a session; then it is closed (0: never)",
    )
    max_clients: int = Field(
        10_000,
        ge=0,
        description="Client WebSockets open at once; more are refused with HTTP 403 (0: no cap)",
    )
    max_clients_per_address: int = Field(
        1_000,
        ge=0,
        description="Client WebSockets open at once from one remote address; more are refused "
        "with HTTP 403 (0: no cap). Behind a proxy or SNAT, many clients share an address",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of proxies whose X-Forwarded-For header names the "
        "client (JSON list); empty: the header is ignored and the TCP peer is the client",
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers handed to clients at GET /ice-servers as they are: "
        "static TURN credentials here are given to anyone who asks (for external TURN "
        "services that need them; prefer turn_urls with turn_secret)",
    )
    turn_urls: list[str] = Field(
        default_factory=list,
        description="turn: and turns: URLs of TURN servers sharing turn_secret (coturn's "
        "use-auth-secret); GET /ice-servers hands out short-lived credentials for them",
    )
    turn_secret: SecretStr | None = Field(
        None, description="TURN REST shared secret (coturn's static-auth-secret)"
    )
    turn_ttl: float = Field(
        600.0, ge=30, le=86400, description="Seconds the issued TURN credentials are valid"
    )
    turn_issue_rate: float = Field(
        0.2,
        gt=0,
        description="TURN credentials issued per second to one remote address when clients "
        "are not authenticated (with tokens: per token subject)",
    )
    turn_issue_burst: int = Field(
        10, ge=1, description="TURN credentials one address (or subject) may take at once"
    )
    log_level: str = Field("info", description="Log level")

    @model_validator(mode="after")
    def _servers_prove_a_secret(self) -> Self:
        require_server_secret(self.client_auth, self.server_secret, "WEBRTC_BROKER_COORDINATOR_")
        return self

    @model_validator(mode="after")
    def _alias_space_is_valid(self) -> Self:
        if self.alias_spaces < 1 or 1000 % self.alias_spaces:
            raise ValueError(f"alias_spaces must divide 1000, not {self.alias_spaces}")
        if self.replica_id is not None and self.replica_id >= self.alias_spaces:
            raise ValueError(f"replica_id must be below alias_spaces ({self.alias_spaces})")
        return self

    @model_validator(mode="after")
    def _turn_is_complete(self) -> Self:
        """TURN URLs without the secret could only be handed out without credentials."""
        if self.turn_urls and (self.turn_secret is None or not self.turn_secret.get_secret_value()):
            raise ValueError("turn_urls need turn_secret (the TURN server's shared secret)")
        if self.turn_secret is not None and not self.turn_urls:
            raise ValueError("turn_secret needs turn_urls (where the TURN server is)")
        return self

    @field_validator("turn_urls")
    @classmethod
    def _turn_urls_are_turn(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"not a turn: or turns: URL: {url!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        """A typo would silently trust nobody (or the wrong network), so refuse it."""
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {entry!r}") from None
        return value


class CommServerConfig(ClientAuthSettings):
    """A comm server: accepts client sessions and relays topic messages."""

    model_config = SettingsConfigDict(env_prefix="WEBRTC_BROKER_COMMSERVER_", frozen=True)

    coordinator_urls: list[str] = Field(
        default_factory=list,
        description="Base WebSocket URLs of the coordinator replicas: one link to each"
        " (a JSON list in the environment) [ws://127.0.0.1:9090]",
    )
    coordinator_url: str | None = Field(
        None,
        description="One coordinator URL: the single-replica spelling of coordinator_urls,"
        " kept for existing deployments",
    )
    coordinator_dns: str | None = Field(
        None,
        description="Host name whose A records (its AAAA records if it has no A record) are"
        " the coordinator replicas (a headless Service): one link per address, re-resolved"
        " every coordinator_dns_interval",
    )
    coordinator_dns_port: int = Field(
        9090, ge=1, le=65535, description="Port of the replicas found by coordinator_dns"
    )
    coordinator_dns_interval: float = Field(
        10.0, gt=0, description="Seconds between resolutions of coordinator_dns"
    )
    load_report_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between client-count reports to each coordinator",
    )
    name: str = Field(
        default_factory=socket.gethostname, description="Name shown in the coordinator's status"
    )
    role: ServerRole = Field("server", description="'server' (full mesh) or 'hub' (star centre)")
    server_secret: SecretStr | None = Field(
        None, description="Shared secret presented to the coordinator and to other servers"
    )
    max_peers: int = Field(
        1000, ge=1, description="Established client sessions accepted before SERVER_FULL"
    )
    max_pending: int = Field(
        200,
        ge=1,
        description="Client sessions being set up at once, apart from max_peers; when full, "
        "the oldest pending session (first those whose peer never answered) is evicted",
    )
    max_candidates: int = Field(
        64, ge=1, le=1024, description="ICE candidates one peer may trickle to a session"
    )
    setup_rate: float = Field(
        50.0,
        ge=0,
        description="Client sessions per second this server starts setting up, sustained "
        "(0: no limit); CONNECTs beyond it are refused as SERVER_FULL",
    )
    setup_burst: int = Field(
        100, ge=1, description="Client session set-ups started at once above that rate"
    )
    establish_timeout: float = Field(
        15.0, gt=0, description="Seconds a new session has to connect and authenticate"
    )
    http_host: str = Field("127.0.0.1", description="Address of the health/status endpoint")
    http_port: int = Field(9100, ge=0, le=65535, description="Port of the health/status endpoint")
    reconnect_min: float = Field(0.25, gt=0, description="First coordinator reconnect delay (s)")
    reconnect_max: float = Field(10.0, gt=0, description="Longest coordinator reconnect delay (s)")
    reliable_queue_frames: int = Field(
        4096, ge=1, description="Frames queued per peer on the reliable channel before closing it"
    )
    unreliable_queue_frames: int = Field(
        256, ge=1, description="Frames queued per peer on the unreliable channel (oldest dropped)"
    )
    buffered_high_bytes: int = Field(
        1 * MIB, ge=1024, description="Data channel buffered amount above which frames queue"
    )
    batch_window: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Seconds frames for one peer may wait to share a message (0: no batching)",
    )
    batch_mode: BatchMode = Field(
        "idle",
        description="'idle': batched frames leave once the server has nothing else queued, "
        "waiting at most batch_window; 'window': they always wait batch_window",
    )
    batch_max_bytes: int = Field(
        limits.BATCH_MAX_BYTES,
        ge=64,
        le=64 * 1024,
        description="Largest batch (the default fits one SCTP packet)",
    )
    keepalive_interval: float = Field(
        1.0, gt=0, description="Seconds between keepalive checks of server links"
    )
    peer_timeout: float = Field(
        5.0, gt=0, description="Seconds of silence after which a server link is dead"
    )
    client_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds of silence (no message, no acknowledgement of ours) after which "
        "a client session is dead; quiet clients are probed with a PING",
    )
    client_probe_after: float = Field(
        2.0,
        gt=0,
        description="Seconds of silence after which a client that announced capabilities gets "
        "a PING (a quarter of client_timeout if that is shorter). Below the SDKs' keepalive "
        "interval (3 s), so an idle client hears this probe before it would PING itself",
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, seconds to hand clients over before exiting"
    )
    unreliable_buffered_high_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Same for the unreliable channel: kept small so that an overloaded "
        "peer loses old updates instead of receiving them seconds late",
    )
    max_topics_bytes: int = Field(
        64 * 1024, ge=256, description="Largest (decompressed) subscription topic list"
    )
    max_frame_bytes: int = Field(
        MAX_FRAME_BYTES,
        ge=1024,
        description="Largest data-channel message taken from a client; larger ones are dropped",
    )
    max_topics_per_peer: int = Field(
        1000, ge=1, description="Topics one client may subscribe to; a larger set is refused"
    )
    max_topic_bytes: int = Field(
        256, ge=1, description="Longest topic name (UTF-8 bytes) in a subscription or publish"
    )
    publish_rate: float = Field(
        1000.0,
        ge=0,
        description="Frames per second one client may send, sustained (0: no limit): topic "
        "messages, PINGs, each frame inside a BATCH, and SUBSCRIPTIONs at one more per KiB of "
        "topic names; excess frames are dropped",
    )
    publish_burst: int = Field(
        5000, ge=1, description="Frames a client may send at once above that rate"
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers for this server's own peer connections",
    )
    udp_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="One UDP port for every peer connection's ICE traffic (ICE UDP mux); "
        "unset: a socket on a free port per connection",
    )
    udp_port_range: str | None = Field(
        None,
        description="LOW-HIGH: each peer connection binds a port in this range (a firewall "
        "opens the range); exclusive with udp_port",
    )
    advertise_addresses: list[str] = Field(
        default_factory=list,
        description="HOST[:PORT] put in this server's candidates instead of its interface "
        "addresses (1:1 NAT, a NodePort or a load balancer); PORT defaults to the bound one",
    )
    candidate_include: list[str] = Field(
        default_factory=list,
        description="Interface names (globs such as eth*) or networks (CIDR) whose addresses "
        "become host candidates; empty: every interface not excluded",
    )
    candidate_exclude: list[str] = Field(
        default_factory=lambda: list(VIRTUAL_INTERFACES),
        description="Interface names (globs) or networks (CIDR) never offered as candidates; "
        "the default leaves out container, CNI, overlay and IPVS interfaces",
    )
    log_level: str = Field("info", description="Log level")

    @model_validator(mode="after")
    def _servers_prove_a_secret(self) -> Self:
        require_server_secret(self.client_auth, self.server_secret, "WEBRTC_BROKER_COMMSERVER_")
        return self

    @model_validator(mode="after")
    def _coordinators_are_known(self) -> Self:
        urls = list(self.coordinator_urls)
        if self.coordinator_url is not None and self.coordinator_url not in urls:
            urls.insert(0, self.coordinator_url)
        if not urls and self.coordinator_dns is None:
            urls = ["ws://127.0.0.1:9090"]
        # Frozen model: the merged list is written once, here.
        object.__setattr__(self, "coordinator_urls", urls)
        return self

    @model_validator(mode="after")
    def _one_port_mode(self) -> Self:
        if self.udp_port is not None and self.udp_port_range is not None:
            raise ValueError("udp_port and udp_port_range are exclusive: choose one")
        return self

    @model_validator(mode="after")
    def _advertised_port_needs_one_port(self) -> Self:
        """Only one bound port can be mapped to one advertised port (a NodePort, a load
        balancer): with a socket per connection there is no port to advertise."""
        if self.udp_port is None and any(parse_host_port(a)[1] for a in self.advertise_addresses):
            raise ValueError("an advertised address with a port needs udp_port (one UDP port)")
        return self

    @field_validator("udp_port_range")
    @classmethod
    def _port_range_is_low_high(cls, value: str | None) -> str | None:
        if value is not None:
            parse_port_range(value)
        return value

    @field_validator("advertise_addresses")
    @classmethod
    def _advertised_are_host_port(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_host_port(entry)
        return value

    @field_validator("candidate_include", "candidate_exclude")
    @classmethod
    def _filters_are_names_or_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"not a network: {entry!r}") from None
            elif not entry:
                raise ValueError("an empty interface name")
        return value

    @property
    def udp_ports(self) -> tuple[int, int] | None:
        """``udp_port_range`` as (low, high), both bound inclusive; None without one."""
        return None if self.udp_port_range is None else parse_port_range(self.udp_port_range)


class OperatorConfig(BaseSettings):
    """The Kubernetes operator that reconciles ``BrokerCluster`` resources."""

    model_config = SettingsConfigDict(env_prefix="WEBRTC_BROKER_OPERATOR_", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to serve (JSON list); empty serves all"
    )
    metrics_host: str = Field("127.0.0.1", description="Address of the /metrics endpoint")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Port of /metrics and /healthz")
    health_port: int = Field(
        8081, ge=0, le=65535, description="Port of kopf's liveness probe (/healthz); 0: off"
    )
    resync_seconds: float = Field(
        10.0, gt=0, description="Seconds between level-based re-reconciles, status and autoscaling"
    )
    status_url: str = Field(
        "http://{service}.{namespace}.svc:{port}/status",
        description="Coordinator /status URL the autoscaler reads ({service}, {namespace}, {port})",
    )
    log_level: str = Field("info", description="Log level")
