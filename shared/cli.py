"""The `routines` command: run a service, migrate, bootstrap, or the local stack."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import signal
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ConfigurationError
from shared.logging import configure_logging, get_logger, redact_text
from shared.settings import (
    ApiSettings,
    CommonSettings,
    DispatcherSettings,
    GatewaySettings,
    SchedulerSettings,
    load_settings,
)

# service command → (settings model, module with create_app)
SERVICES: dict[str, tuple[type[CommonSettings], str]] = {
    "api": (ApiSettings, "routines_api.app"),
    "scheduler": (SchedulerSettings, "routines_scheduler.app"),
    "webhook-gateway": (GatewaySettings, "routines_gateway.app"),
    "run-dispatcher": (DispatcherSettings, "routines_dispatcher.app"),
}


def _run(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def run_service(name: str) -> int:
    """Run one service until it is told to stop; the exit code says how it ended."""
    from shared.lifecycle import serve

    settings_cls, module_name = SERVICES[name]
    settings = load_settings(settings_cls)
    configure_logging(name, settings.log_level, settings.log_format)
    create_app: Callable[[Any], Any] = importlib.import_module(module_name).create_app

    async def main() -> int:
        app = create_app(settings)
        return await serve(
            app, settings.http_host, settings.http_port, settings.shutdown_timeout_sec, settings.http_backlog
        )

    code = int(_run(main()))
    # Stopped: a second signal (Ctrl-C reaches us and `routines dev` forwards SIGTERM too) must
    # not kill the interpreter while it exits.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def run_migrate() -> int:
    from shared.migrate import migrate

    settings = load_settings(CommonSettings)
    configure_logging("migrate", settings.log_level, settings.log_format)
    applied = _run(migrate(settings.database_url))
    get_logger("migrate").info("migrations done", applied=applied)
    return 0


def run_bootstrap(name: str) -> int:
    from shared.bootstrap import create_instance_admin_token

    settings = load_settings(CommonSettings)
    configure_logging("bootstrap", settings.log_level, settings.log_format)
    token = _run(create_instance_admin_token(settings.database_url, name))
    # The one place a token is shown: stdout of the command that made it, never a log line.
    print(token)
    return 0


def run_wait_schema(timeout: float) -> int:
    from shared.migrate import wait_for_schema

    settings = load_settings(CommonSettings)
    configure_logging("wait-schema", settings.log_level, settings.log_format)
    missing = _run(wait_for_schema(settings.database_url, timeout))
    if missing:
        print(
            f"routines: schema still lacks {', '.join(missing)}; did the migration Job run?", file=sys.stderr
        )
        return 1
    return 0


def version() -> str:
    """The installed package version."""
    try:
        return importlib.metadata.version("routines")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _database_target() -> str:
    """host:port/db of the configured database, without credentials, for error messages."""
    import os

    dsn = os.environ.get("ROUTINES_DATABASE_URL", "")
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    except ValueError:
        return "the configured database"


def _connection_failure(command: str, exc: BaseException) -> str:
    """One line saying what could not be reached and why."""
    reason = redact_text(str(exc) or type(exc).__name__)
    if command in ("migrate", "bootstrap"):
        return f"cannot reach the database at {_database_target()}: {reason} (check ROUTINES_DATABASE_URL)"
    return f"{command} failed: {type(exc).__name__}: {reason}"


def run_reencrypt() -> int:
    from shared.crypto import SecretBox
    from shared.reencrypt import reencrypt_secrets
    from shared.settings import SecretKeySettings

    settings = load_settings(SecretKeySettings)
    configure_logging("reencrypt", settings.log_level, settings.log_format)
    result = _run(reencrypt_secrets(settings.database_url, SecretBox(settings.secret_key)))
    get_logger("reencrypt").info("reencrypt done", examined=result.examined, reencrypted=result.reencrypted)
    return 0


# Commands for agents and operators that talk to the API through the Python client.
CLIENT_COMMANDS = {
    "routine": "list, show, create, update, pause, resume or archive routines",
    "trigger": "add, update, delete or rotate triggers",
    "run": "run a routine now",
    "runs": "list (or follow) a routine's runs",
    "cron": "preview a cron expression",
    "upcoming": "a routine's next fires",
    "wakeups": "follow the calling agent's wake-ups",
    "mcp": "serve the Model Context Protocol over stdio (for agents)",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `routines` command; returns the process exit code."""
    import asyncpg

    arguments = list(sys.argv[1:] if argv is None else argv)
    if next((a for a in arguments if not a.startswith("-")), None) in CLIENT_COMMANDS:
        from routines_client.cli import main as client_main

        return client_main(arguments)
    parser = argparse.ArgumentParser(prog="routines", description=__doc__)
    parser.add_argument("--version", action="version", version=f"routines {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in CLIENT_COMMANDS.items():
        commands.add_parser(name, help=f"{text} (see routines {name} --help)")
    for name in SERVICES:
        commands.add_parser(name, help=f"run the {name} service")
    commands.add_parser("migrate", help="apply database migrations")
    bootstrap = commands.add_parser("bootstrap", help="create an instance-admin token and print it once")
    bootstrap.add_argument("--name", default="bootstrap", help="label stored with the token")
    commands.add_parser("dev", help="run the local stack (embedded Postgres and NATS, four services)")
    commands.add_parser("gen-secret-key", help="print a new ROUTINES_SECRET_KEY")
    commands.add_parser("reencrypt", help="re-encrypt every webhook secret under the key ring's first key")
    wait_schema = commands.add_parser(
        "wait-schema", help="wait until the migrations of this release are applied"
    )
    wait_schema.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    args = parser.parse_args(arguments)
    try:
        if args.command in SERVICES:
            return run_service(args.command)
        if args.command == "migrate":
            return run_migrate()
        if args.command == "bootstrap":
            return run_bootstrap(args.name)
        if args.command == "reencrypt":
            return run_reencrypt()
        if args.command == "wait-schema":
            return run_wait_schema(args.timeout)
        if args.command == "gen-secret-key":
            from shared.crypto import new_secret_key

            print(new_secret_key())
            return 0
        from shared.devstack import run_dev_stack

        return run_dev_stack()
    except ConfigurationError as exc:
        print(f"routines: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"routines: {_connection_failure(args.command, exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
