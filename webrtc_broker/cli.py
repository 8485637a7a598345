"""The ``webrtc-broker`` command.

Flags map onto the typed configuration in :mod:`webrtc_broker.config`: a flag
that is not given leaves the environment variable or the default in force.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click
from pydantic import ValidationError

from broker_operator.cli import operator
from webrtc_broker import __version__, logs
from webrtc_broker.bench.cli import bench, soak
from webrtc_broker.config import CommServerConfig, CoordinatorConfig
from webrtc_broker.extras import missing_extra


def _given(**flags: Any) -> dict[str, Any]:
    """Only the flags the user actually passed, so env vars and defaults still apply."""
    return {name: value for name, value in flags.items() if value is not None}


def _load(model: type[CoordinatorConfig] | type[CommServerConfig], **flags: Any) -> Any:
    try:
        return model(**_given(**flags))
    except ValidationError as exc:
        # Without the input values: pydantic would echo every setting, secrets included.
        problems = exc.errors(include_url=False, include_input=False)
        lines = [
            f"{'.'.join(map(str, p['loc'])) or model.__name__}: "
            + p["msg"].removeprefix("Value error, ")
            for p in problems
        ]
        raise click.UsageError("; ".join(lines)) from exc


class _Commands(click.Group):
    """The command group; a subcommand missing an extra's module says which to install."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            hint = missing_extra(exc, ctx.invoked_subcommand)
            if hint is None:
                raise
            raise click.ClickException(hint) from exc


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="webrtc-broker")
def main() -> None:
    """A pub/sub message broker whose clients talk over WebRTC data channels."""


main.add_command(bench)
main.add_command(soak)
main.add_command(operator)


@main.command()
@click.option("--host", help="Address to bind [127.0.0.1]")
@click.option("--port", type=int, help="Port to bind [9090]")
@click.option("--server-secret", help="Secret comm servers must present [none]")
@click.option("--client-auth", type=click.Choice(["none", "jwt"]), help="Client check [none]")
@click.option("--client-jwt-secret", help="HS256 key of client tokens, 32+ bytes (for jwt)")
@click.option("--max-pending-connects", type=int, help="Unanswered CONNECTs per client [4]")
@click.option("--max-message-bytes", type=int, help="Largest WebSocket message [262144]")
@click.option("--signal-rate", type=float, help="Frames/s per client connection, 0: off [20]")
@click.option("--signal-burst", type=int, help="Frames a client connection may send at once [100]")
@click.option("--subject-signal-rate", type=float, help="Frames/s per token subject [100]")
@click.option("--subject-signal-burst", type=int, help="Frames per token subject at once [500]")
@click.option("--client-queue-share", type=float, help="Server queue share for clients [0.5]")
@click.option("--handshake-timeout", type=float, help="Seconds to complete an HTTP request [10]")
@click.option("--client-idle-timeout", type=float, help="Seconds a client may idle, 0: off [30]")
@click.option("--max-clients", type=int, help="Client WebSockets open at once, 0: no cap [10000]")
@click.option("--max-clients-per-address", type=int, help="Client WebSockets per address [1000]")
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="Address or network whose X-Forwarded-For names the client (repeatable) [none]",
)
@click.option("--selector", type=click.Choice(["random", "round-robin", "least-clients"]))
@click.option(
    "--alias-spaces", type=int, help="Replicas' disjoint alias spaces, a divisor of 1000 [1]"
)
@click.option("--replica-id", type=int, help="This replica's alias space [random]")
@click.option(
    "--ready-needs-server/--ready-without-server",
    default=None,
    help="/readyz only while a comm server is registered [--ready-without-server]",
)
@click.option(
    "--turn-url",
    "turn_urls",
    multiple=True,
    help="turn:/turns: URL of a TURN server sharing --turn-secret (repeatable) [none]",
)
@click.option("--turn-secret", help="TURN REST shared secret (coturn static-auth-secret) [none]")
@click.option("--turn-ttl", type=float, help="Seconds issued TURN credentials last [600]")
@click.option(
    "--turn-issue-rate",
    type=float,
    help="TURN credentials/s per address (per subject with tokens) [0.2]",
)
@click.option(
    "--turn-issue-burst", type=int, help="TURN credentials per address (subject) at once [10]"
)
@click.option("--log-level", help="Log level [info]")
def coordinator(**flags: Any) -> None:
    """Run the coordinator (WebSocket entry point and signalling relay)."""
    from coordinator import serve  # noqa: PLC0415 - keep `webrtc-broker --help` fast

    # A repeatable flag given no times is an empty tuple: leave the setting alone.
    for repeatable in ("trusted_proxies", "turn_urls"):
        flags[repeatable] = list(flags[repeatable]) or None
    config: CoordinatorConfig = _load(CoordinatorConfig, **flags)
    logs.configure(config.log_level)
    asyncio.run(serve(config))


@main.command()
@click.option(
    "--coordinator-url",
    "coordinator_urls",
    multiple=True,
    help="Coordinator WebSocket URL; repeat it for every replica [ws://127.0.0.1:9090]",
)
@click.option(
    "--coordinator-dns",
    help="Host name whose A (else AAAA) records are the coordinator replicas [none]",
)
@click.option("--coordinator-dns-port", type=int, help="Port of those replicas [9090]")
@click.option("--coordinator-dns-interval", type=float, help="Seconds between lookups [10]")
@click.option("--load-report-interval", type=float, help="Seconds between client-count reports [2]")
@click.option("--name", help="Name shown in the coordinator's status [hostname]")
@click.option("--role", type=click.Choice(["server", "hub"]), help="Mesh role [server]")
@click.option("--server-secret", help="Shared server secret [none]")
@click.option("--client-auth", type=click.Choice(["none", "jwt"]), help="Client check [none]")
@click.option("--client-jwt-secret", help="HS256 key of client tokens, 32+ bytes (for jwt)")
@click.option("--max-peers", type=int, help="Client sessions before SERVER_FULL [1000]")
@click.option("--max-pending", type=int, help="Sessions in set-up; oldest evicted [200]")
@click.option("--max-candidates", type=int, help="ICE candidates per session [64]")
@click.option("--setup-rate", type=float, help="Client session set-ups/s, 0=unlimited [50]")
@click.option("--setup-burst", type=int, help="Set-ups started at once above the rate [100]")
@click.option("--max-frame-bytes", type=int, help="Largest message from a client [261120]")
@click.option("--max-topics-per-peer", type=int, help="Topics one client may subscribe to [1000]")
@click.option("--max-topic-bytes", type=int, help="Longest topic name [256]")
@click.option("--publish-rate", type=float, help="Frames/s per client, 0=unlimited [1000]")
@click.option("--publish-burst", type=int, help="Frames a client may burst [5000]")
@click.option("--client-timeout", type=float, help="Seconds a silent client lives [10]")
@click.option("--client-probe-after", type=float, help="Seconds until a quiet client is probed [2]")
@click.option("--peer-timeout", type=float, help="Seconds a silent server link lives [5]")
@click.option("--keepalive-interval", type=float, help="Seconds between liveness checks [1]")
@click.option("--establish-timeout", type=float, help="Seconds to set up a session [15]")
@click.option("--http-host", help="Address of the health/status endpoint [127.0.0.1]")
@click.option("--http-port", type=int, help="Port of the health/status endpoint [9100]")
@click.option(
    "--batch-window", type=float, help="Longest wait of a batched frame in seconds, 0=off [0.01]"
)
@click.option(
    "--batch-mode",
    type=click.Choice(["idle", "window"]),
    help="Batched frames leave once the server is idle, or after the whole window [idle]",
)
@click.option("--batch-max-bytes", type=int, help="Largest batch message [1160]")
@click.option("--drain-seconds", type=float, help="On SIGTERM, seconds to hand clients over [10]")
@click.option("--udp-port", type=int, help="One UDP port for all peer connections [a port each]")
@click.option("--udp-port-range", help="LOW-HIGH: peer connections bind ports in it [any port]")
@click.option(
    "--advertise-address",
    "advertise_addresses",
    multiple=True,
    help="HOST[:PORT] candidates carry instead of interface addresses (repeatable) [none]",
)
@click.option(
    "--candidate-include",
    multiple=True,
    help="Interface glob or CIDR whose addresses are offered (repeatable) [all]",
)
@click.option(
    "--candidate-exclude",
    multiple=True,
    help="Interface glob or CIDR never offered (repeatable) [lo, container and CNI devices]",
)
@click.option("--log-level", help="Log level [info]")
def commserver(**flags: Any) -> None:
    """Run a comm server that relays topic messages over WebRTC."""
    from commserver import serve  # noqa: PLC0415

    repeatables = ("coordinator_urls", "advertise_addresses", "candidate_include")
    for repeatable in (*repeatables, "candidate_exclude"):
        flags[repeatable] = list(flags[repeatable]) or None
    config: CommServerConfig = _load(CommServerConfig, **flags)
    logs.configure(config.log_level)
    asyncio.run(serve(config))


@main.command()
@click.option("--servers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind")
@click.option("--port", default=9090, show_default=True, type=int, help="Coordinator port")
@click.option(
    "--coordinators",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10),
    help="Coordinator replicas on consecutive ports from --port; every server links to all",
)
@click.option(
    "--http-port-base",
    default=9101,
    show_default=True,
    type=int,
    help="Comm server N gets the status port BASE+N-1",
)
@click.option("--max-peers", type=int, help="Client sessions per server [1000]")
@click.option("--demo/--no-demo", default=False, help="Run a short demo once the cluster is up")
def up(**options: Any) -> None:
    """Run a local cluster: coordinators and N comm servers, until Ctrl-C."""
    from webrtc_broker.cluster import ClusterSpec, run_cluster  # noqa: PLC0415

    logs.configure("info")
    spec = ClusterSpec(
        servers=options["servers"],
        host=options["host"],
        port=options["port"],
        coordinators=options["coordinators"],
        http_port_base=options["http_port_base"],
        max_peers=options["max_peers"],
    )
    raise SystemExit(asyncio.run(run_cluster(spec, demo=options["demo"])))


@main.command()
@click.option("--coordinator-url", default="ws://127.0.0.1:9090", show_default=True)
@click.option("--topic", "topics", multiple=True, required=True, help="Topic (repeatable)")
@click.option("--credentials", default="", help="Credentials for the coordinator and server")
@click.option("--unreliable", is_flag=True, help="Publish on the unreliable channel")
@click.option("--identity", is_flag=True, help="Publish with the authenticated identity")
@click.option("--no-stdin", is_flag=True, help="Only print what arrives; publish nothing")
def client(**options: Any) -> None:
    """Print what arrives on TOPIC and publish each line of stdin to it."""
    from webrtc_broker.client.cli import run_client  # noqa: PLC0415

    logs.configure("warning")
    raise SystemExit(asyncio.run(run_client(**options)))


@main.command()
@click.option("--coordinator-url", default="ws://127.0.0.1:9090", show_default=True)
@click.option("--credentials", default="", help="Credentials for the coordinator and server")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to keep trying")
@click.option("--attempt-timeout", default=20.0, show_default=True, help="Seconds per attempt")
def probe(**options: Any) -> None:
    """Round-trip a message between two clients; exit 0 if it worked, 1 if not."""
    from webrtc_broker.probe import run_probe  # noqa: PLC0415

    logs.configure("warning")
    raise SystemExit(asyncio.run(run_probe(**options)))


@main.command()
@click.option(
    "--coordinator-url",
    default="http://127.0.0.1:9090",
    show_default=True,
    help="Coordinator URL (http:// or the ws:// URL clients use)",
)
@click.option(
    "--server-status",
    "server_urls",
    multiple=True,
    metavar="URL",
    help="A comm server's HTTP URL (its --http-port), for topics and queues (repeatable)",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table")
def status(coordinator_url: str, server_urls: tuple[str, ...], as_json: bool) -> None:
    """Summarise a running cluster: servers, clients per server and topics."""
    from webrtc_broker.status import run_status  # noqa: PLC0415

    raise SystemExit(asyncio.run(run_status(coordinator_url, server_urls, as_json)))


@main.command()
@click.option(
    "--secret",
    envvar="WEBRTC_BROKER_CLIENT_JWT_SECRET",
    required=True,
    help="The HS256 key the broker checks tokens with (env WEBRTC_BROKER_CLIENT_JWT_SECRET)",
)
@click.option("--subject", required=True, help="Who the token identifies (its 'sub' claim)")
@click.option("--ttl", default=3600.0, show_default=True, help="Seconds until it expires")
def token(secret: str, subject: str, ttl: float) -> None:
    """Print a client token for ``--client-auth jwt`` (pass it as the client's credentials)."""
    from webrtc_broker.tokens import issue_token  # noqa: PLC0415

    try:
        click.echo(issue_token(secret, subject, ttl))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
