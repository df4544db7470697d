"""`scim-server graph-emulator`: a sandbox tenant on loopback for tests and laptops."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

import click

from scim_server.graph.emulator.state import EmulatorOptions


@click.command("graph-emulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=int, help="0 picks a free port")
@click.option("--domain", "domains", multiple=True, help="verified managed domain (repeatable)")
@click.option("--federated-domain", "federated", multiple=True, help="verified federated domain")
@click.option("--unverified-domain", "unverified", multiple=True, help="added, not verified")
@click.option("--tenant-id", default=None, help="default: a random GUID")
@click.option("--client-id", default=None, help="the one app's id; default: a random GUID")
@click.option("--client-secret", default=None, help="default: random, shown in the start-up line")
@click.option(
    "--client-certificate",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate whose key may sign client assertions",
)
@click.option("--replication-lag", default=0.0, show_default=True, type=float, help="seconds")
@click.option("--write-budget", default=3000, show_default=True, type=int)
@click.option("--write-window", default=150.0, show_default=True, type=float, help="seconds")
@click.option(
    "--state-file", type=click.Path(dir_okay=False, path_type=Path), help="keep state in SQLite"
)
@click.option("--control", is_flag=True, help="enable the test-only /_emulator/ endpoints")
@click.option("--no-tls", is_flag=True, help="plain HTTP (msal refuses it; ca_bundle is null)")
def graph_emulator(
    host: str,
    port: int,
    domains: tuple[str, ...],
    federated: tuple[str, ...],
    unverified: tuple[str, ...],
    tenant_id: str | None,
    client_id: str | None,
    client_secret: str | None,
    client_certificate: Path | None,
    replication_lag: float,
    write_budget: int,
    write_window: float,
    state_file: Path | None,
    control: bool,
    no_tls: bool,
) -> None:
    """Serve Entra's identity endpoints and Microsoft Graph v1.0 on loopback.

    Prints one JSON line on stdout (authority_host, graph_url, tenant_id, client_id,
    client_secret, ca_bundle, domains), then serves until interrupted.
    """
    from cryptography import x509

    from scim_server.graph.emulator.server import EmulatorServer
    from scim_server.graph.emulator.store import saved_tenant_id

    if state_file is not None and tenant_id is None:
        # A kept tenant comes back under its own id unless --tenant-id says otherwise.
        tenant_id = saved_tenant_id(state_file)
    options = EmulatorOptions(
        domains=list(domains) or ["example.com"],
        federated_domains=list(federated),
        unverified_domains=list(unverified),
        tenant_id=tenant_id or str(uuid.uuid4()),
        client_id=client_id or str(uuid.uuid4()),
        client_secret=client_secret or secrets.token_urlsafe(30),
        client_certificate=(
            x509.load_pem_x509_certificate(client_certificate.read_bytes())
            if client_certificate
            else None
        ),
        replication_lag=replication_lag,
        write_budget=write_budget,
        write_window=write_window,
        state_file=state_file,
        control=control,
    )
    try:
        server = EmulatorServer(options, host=host, port=port, use_tls=not no_tls)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    # The start-up line carries the client secret on purpose: a script wires the server from it.
    click.echo(json.dumps(server.info), nl=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
