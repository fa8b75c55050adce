"""``gridshift webhooks add|list|remove|test|deliveries``: a tenant's event endpoints (admin key)."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.commands.common import (
    ApiKeyOption,
    ApiUrlOption,
    JsonOption,
    exit_on_error,
    make_client,
    print_json,
)
from scheduler.store.webhooks import EVENT_TYPES

PATH = "/v1/webhook_endpoints"
EndpointIdArgument = Annotated[str, typer.Argument(help="Endpoint id (we_...).")]


def register(app: typer.Typer) -> None:
    """Mount the ``webhooks`` group on ``app``."""
    hooks = typer.Typer(
        help="Webhook endpoints receiving batch.completed/failed/expired/cancelled (admin key).",
        no_args_is_help=True,
    )

    @hooks.command("add")
    def add(
        url: Annotated[str, typer.Argument(help="http(s) URL that receives the events.")],
        tenant: Annotated[
            str | None, typer.Option(help="Tenant whose batches it hears (default: yours).")
        ] = None,
        name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "webhook",
        event: Annotated[
            list[str] | None,
            typer.Option("--event", help=f"Event type (repeatable; default all: {EVENT_TYPES})."),
        ] = None,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Register an endpoint; prints its id and signing secret (shown only this once)."""
        body = {"url": url, "name": name, "event_types": event or list(EVENT_TYPES)}
        if tenant is not None:
            body["tenant"] = tenant
        with exit_on_error(), make_client(api_url, api_key) as client:
            row = client.request_json("POST", PATH, json=body)
        if as_json:
            print_json(row)
            return
        typer.echo(f"{row['id']} {row['url']} {','.join(row['event_types'])}")
        typer.echo(row["signing_secret"])
        typer.echo("the signing secret is shown only once: store it with the receiver", err=True)

    @hooks.command("list")
    def list_(
        tenant: Annotated[str | None, typer.Option(help="Only this tenant's endpoints.")] = None,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """List endpoints, newest first: id, tenant, URL, event types."""
        params = {"tenant": tenant} if tenant else {}
        with exit_on_error(), make_client(api_url, api_key) as client:
            page = client.request_json("GET", PATH, params=params)
        if as_json:
            print_json(page)
            return
        for r in page["data"]:
            types = ",".join(r["event_types"])
            typer.echo(f"{r['id']}  {r['tenant_id']}  {r['url']}  {types}  {r['name']}")

    @hooks.command("remove")
    def remove(
        endpoint_id: EndpointIdArgument,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Delete an endpoint (its pending deliveries are marked failed)."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            client.request_json("DELETE", f"{PATH}/{endpoint_id}")
        typer.echo(f"{endpoint_id} removed")

    @hooks.command("test")
    def test(
        endpoint_id: EndpointIdArgument,
        event: Annotated[str, typer.Option("--event", help="Event type of the sample.")] = (
            "batch.completed"
        ),
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """Send one signed sample event now; prints the receiver's HTTP status (exit 1 unless 2xx)."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            result = client.request_json(
                "POST", f"{PATH}/{endpoint_id}/test", json={"event_type": event}
            )
        if as_json:
            print_json(result)
        else:
            typer.echo(f"{endpoint_id} answered HTTP {result['status_code']}")
        if not 200 <= int(result["status_code"]) < 300:
            raise typer.Exit(1)

    @hooks.command("deliveries")
    def deliveries(
        endpoint_id: EndpointIdArgument,
        as_json: JsonOption = False,
        api_url: ApiUrlOption = None,
        api_key: ApiKeyOption = None,
    ) -> None:
        """The endpoint's newest deliveries: event, batch, status, attempts, last error."""
        with exit_on_error(), make_client(api_url, api_key) as client:
            page = client.request_json("GET", f"{PATH}/{endpoint_id}/deliveries")
        if as_json:
            print_json(page)
            return
        for d in page["data"]:
            typer.echo(
                f"{d['event_id']}  {d['event_type']:<16} {d['subject_id']}  {d['status']:<9} "
                f"attempts={d['attempts']}  {d['last_error'] or ''}".rstrip()
            )

    app.add_typer(hooks, name="webhooks")
