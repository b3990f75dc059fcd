"""`mesh operators add|remove|list`: which accounts are this Mesh's operators (the shared operator token stays for
automation and bootstrap). The role is an event on the account (`account.operator_granted` / `_revoked`)."""

from __future__ import annotations

import asyncio

import psycopg

from api.connections import connect_nats, disconnect_nats, open_pool
from api.servers import MeshError, Servers
from api.settings import Settings

CLI_OPERATOR = "cli"  # who the events say gave or took the role


async def operators(settings: Settings, action: str, email: str | None) -> int:
    from commands.accounts import AccountCommands
    from commands.app import MeshApplication, NotFound
    from commands.stream import MAX_BYTES_ENV, ensure_log_stream
    from projections import directory

    if action in ("add", "remove") and not email:
        raise MeshError(f"`mesh operators {action}` needs the email of an existing account")
    with Servers(settings) as servers:
        if action == "list":
            pool = await open_pool(servers.database_url)
            try:
                async with pool.connection() as conn:
                    found = await directory.operators(conn)
            except psycopg.errors.UndefinedTable:
                raise MeshError("no read models yet: start `mesh up` once") from None
            finally:
                await pool.close()
            for row in found:
                print(f"{row.email}\t{row.account_id}", flush=True)
            if not found:
                print("no operators yet: `mesh operators add <email>` makes one", flush=True)
            return 0
        nc = await connect_nats(servers.nats_url)
        try:
            limit = await ensure_log_stream(nc, settings.stream, settings.stream_max_bytes)
        finally:
            await disconnect_nats(nc)
        app = await asyncio.to_thread(MeshApplication, servers.nats_url, settings.stream, {MAX_BYTES_ENV: str(limit)})
        try:
            accounts = AccountCommands(app)
            account_id, position = await asyncio.to_thread(
                accounts.set_operator, email or "", action == "add", CLI_OPERATOR
            )
        except (NotFound, ValueError) as exc:
            raise MeshError(str(exc)) from None
        finally:
            await asyncio.to_thread(app.close)
    done = "is now an operator" if action == "add" else "is no longer an operator"
    unchanged = "was already an operator" if action == "add" else "was not an operator"
    print(f"{email} ({account_id}) {done if position else unchanged}", flush=True)
    return 0
