"""`microgenre serve`: the model behind an OpenAI-compatible HTTP API (the remote transport)."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import signal
from pathlib import Path
from typing import Any

import click

from bot.cli.common import state
from bot.config import Config
from bot.errors import InputError, MicrogenreError

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    """
    >>> _is_loopback("127.0.0.1"), _is_loopback("localhost"), _is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def adapter_roots(config: Config) -> list[Path]:
    """The folders `serve` loads adapters from: ``[serve] adapter_dirs``, else the defaults.

    >>> from bot.config import load_config
    >>> roots = adapter_roots(load_config(None, environ={"MICROGENRE_PATHS_DATA_DIR": "/d"}))
    >>> roots[0], roots[1].name
    (PosixPath('/d/adapters'), 'default_adapter')
    """
    from model.artifacts import DEFAULT_ADAPTER_DIR

    if config.serve.adapter_dirs:
        return [config.resolve_path(d) for d in config.serve.adapter_dirs]
    roots = [config.data_dir / "adapters", DEFAULT_ADAPTER_DIR]
    if config.model.adapter:
        roots.append(config.resolve_path(config.model.adapter))
    return roots


def _load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise InputError(
            f"--sampler-factory: cannot import {spec!r} (expected module:function)"
        ) from None


@click.command()
@click.option("--host", default=None, help="Address to bind (default: [serve] host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: [serve] port)."
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve on a non-loopback address without an API token (anyone who can reach it may "
    "use the model).",
)
@click.option(
    "--sampler-factory",
    default=None,
    hidden=True,
    help="module:function building the sampler in the worker (tests and benchmarks).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    insecure: bool,
    sampler_factory: str | None,
) -> None:
    """Serve the model over an OpenAI-compatible API (POST /v1/completions, GET /v1/models,
    GET /health) for the bot's remote transport. Hot reloads need [serve] api_token; so does an
    address other than loopback, unless --insecure. SIGTERM or Ctrl-C stops it cleanly."""
    config = state(ctx).config
    host = host or config.serve.host
    port = config.serve.port if port is None else port
    if not _is_loopback(host) and not config.serve.api_token:
        if not insecure:
            raise InputError(
                f"Refusing to serve on {host} without an API token: anyone who can reach this "
                "machine could use the model. Set MICROGENRE_SERVE_API_TOKEN (or [serve] "
                "api_token), bind 127.0.0.1, or pass --insecure."
            )
        click.echo(
            f"Warning (--insecure): serving on {host} without an API token; anyone who can "
            "reach this machine can use the model.",
            err=True,
        )
    factory = _load_factory(sampler_factory) if sampler_factory else None
    asyncio.run(_serve(config, host, port, factory))


async def _serve(config: Config, host: str, port: int, factory: Any) -> None:
    from aiohttp import web

    from bot.cli.versions import default_model_config, guild_adapters
    from model.worker.factory import make_local_client
    from model.worker.server import create_app

    # Start on the database's default model, with every server's own model registered under
    # its name (the worker loads each on its first request).
    config, _ = await default_model_config(config)
    adapters = await guild_adapters(config)
    client = make_local_client(config, sampler_factory=factory)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner: web.AppRunner | None = None
    stopping = asyncio.ensure_future(stop.wait())
    try:
        click.echo(f"Loading {client.spec.base_model} ...", err=True)
        starting = asyncio.ensure_future(client.start())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            return
        starting.result()
        app = create_app(
            client,
            config.serve,
            api_token=config.serve.api_token,
            adapters=adapters,
            adapter_roots=adapter_roots(config),
            metrics_token=config.serve.metrics_token,
            # Without a scrape token, this machine may scrape a server only it can reach.
            open_metrics=not config.serve.metrics_token and _is_loopback(host),
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise MicrogenreError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}."
            ) from None
        bound = runner.addresses[0] if runner.addresses else (host, port)
        if not config.serve.api_token:
            click.echo(
                "No API token: hot reload (POST /v1/load_lora_adapter) is off and /health "
                "shows liveness only; set MICROGENRE_SERVE_API_TOKEN to enable them.",
                err=True,
            )
        click.echo(
            f"Serving {client.model_name} as '{config.serve.model_name}' on "
            f"http://{_url_host(bound[0])}:{bound[1]} (Ctrl-C to stop)",
            err=True,
        )
        await stopping
        click.echo("Shutting down ...", err=True)
    finally:
        stopping.cancel()
        if runner is not None:
            await runner.cleanup()
        await client.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
