"""The webhook delivery worker: sends what the outbox (projections/webhooks.py) holds, and watches balances for
`balance.low`.

At least once: an attempt is recorded after the endpoint answered, so a crash in between sends it again (the
payload's `id`, also header `Mesh-Event-Id`, lets a receiver drop the copy). In order per account: only an
account's oldest pending delivery is sent, one at a time; a failing endpoint holds back its own account only.
A failed attempt is retried after `retry_delay` (doubling) until the delivery's retry window ends; then it is
marked failed and the next one goes. Everything lives in PostgreSQL, so a restart resumes where it was.

A delivery never goes to a loopback, private, link-local, multicast or reserved address unless
MESH_WEBHOOK_ALLOW_PRIVATE: the host is resolved at every attempt, each address it has is checked (a name that
pointed somewhere public at registration may not anymore), and the request goes to the address checked (DNS
rebinding cannot swap it in between). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx
import msgspec
from psycopg_pool import AsyncConnectionPool

from domain.webhook import SIGNATURE_HEADER, balance_watch, endpoint_secret, refused_address, retry_delay, signature
from gateway.pause import stopped_within
from projections.runner import any_set
from projections.webhooks import TABLES, enqueue
from domain.money import pico_to_usd

log = logging.getLogger("mesh.webhooks")

ATTEMPT_TIMEOUT = 10.0  # seconds for one attempt: connect, send, answer
MAX_RESPONSE_BYTES = 64 * 1024  # of an endpoint's answer read (the rest is dropped)
MAX_ERROR_LENGTH = 500  # characters of an attempt's error kept
MAX_IN_FLIGHT = 32  # accounts delivered to at the same time
# The worker looks for due deliveries and low balances when told (`look`: the outbox or the balances changed, an
# attempt ended) and when the next retry is due, at most every LOOK_GAP (under load the balances change with
# every batch); and for deliveries resent by hand (another process may write them) at least every
# RESEND_LOOK_EVERY.
LOOK_GAP = 0.25  # seconds
RESEND_LOOK_EVERY = 1.0  # seconds
DEFAULT_RETRY_BASE = 30.0  # seconds after the first failure (MESH_WEBHOOK_RETRY_BASE_SECONDS)


class Refused(Exception):
    """The endpoint's host may not be sent to (or cannot be resolved)."""


async def checked_addresses(host: str, port: int, allow_private: bool) -> list[str]:
    """The host's addresses, each allowed (else Refused naming the rule)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), ATTEMPT_TIMEOUT)
    except (OSError, UnicodeError, ValueError, asyncio.TimeoutError) as exc:  # UnicodeError: a bad IDNA name
        raise Refused(f"cannot resolve {host[:100]}: {exc or type(exc).__name__}") from None
    addresses = sorted({info[4][0] for info in infos})
    if not allow_private:
        for address in addresses:
            reason = refused_address(ipaddress.ip_address(address.split("%", 1)[0]))
            if reason:
                raise Refused(f"{host} resolves to {address}, a {reason} address (MESH_WEBHOOK_ALLOW_PRIVATE is off)")
    return addresses


class WebhookOptions(msgspec.Struct, frozen=True):
    signing_key: str  # what each endpoint's secret derives from (MESH_WEBHOOK_SIGNING_KEY or the data dir's)
    allow_private: bool = False  # MESH_WEBHOOK_ALLOW_PRIVATE
    retry_base: float = DEFAULT_RETRY_BASE  # MESH_WEBHOOK_RETRY_BASE_SECONDS


class WebhookDelivery:
    def __init__(self, pool: AsyncConnectionPool, options: WebhookOptions):
        self.pool = pool
        self.signing_key = options.signing_key
        self.allow_private = options.allow_private
        self.retry_base = options.retry_base
        self._in_flight: dict[UUID, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.client = httpx.AsyncClient(follow_redirects=False, timeout=ATTEMPT_TIMEOUT, trust_env=False)
        self._changed = asyncio.Event()

    def look(self) -> None:
        """The outbox or the balances changed: look at them now."""
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.look()
        next_due: float | None = None
        try:
            while not stop.is_set():
                changed = self._changed.is_set()
                self._changed.clear()
                try:
                    if changed:
                        await self.watch_balances()
                    next_due = await self.send_due()
                except Exception as exc:
                    log.warning("webhook delivery pass failed (%s: %s); will retry", type(exc).__name__, exc)
                    self.look()
                if await stopped_within(stop, LOOK_GAP):
                    break
                wait = RESEND_LOOK_EVERY if next_due is None else min(RESEND_LOOK_EVERY, next_due - LOOK_GAP)
                await any_set((stop, self._changed), max(wait, 0.0))
        finally:
            for task in list(self._in_flight.values()):
                task.cancel()
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
            await self.client.aclose()

    async def watch_balances(self) -> None:
        """balance.low: each endpoint watching a threshold fires once per crossing below it (billing balances),
        and is armed again when the balance is back above; decided and queued in one transaction."""
        e = TABLES["webhook_endpoints"]
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"""select e.endpoint_id, e.account_id, e.armed, (b.credits - b.spend)::numeric, e.threshold
                    from {e} e join balances b on b.account_id = e.account_id
                    where not e.removed and 'balance.low' = any(e.events) and e.threshold is not null
                    for update of e skip locked"""
            )
            async with conn.cursor() as write:
                for endpoint_id, account_id, armed, balance, threshold in await cur.fetchall():
                    notify, armed_after = balance_watch(armed, int(balance), int(threshold))
                    if armed_after != armed:
                        await write.execute(
                            f"update {e} set armed = %s where endpoint_id = %s", (armed_after, endpoint_id)
                        )
                    if notify:
                        data = {"balance_usd": pico_to_usd(int(balance)), "threshold_usd": pico_to_usd(int(threshold))}
                        now = datetime.now(timezone.utc)
                        await enqueue(write, TABLES, account_id, "balance.low", data, now, uuid4(), endpoint_id)

    async def send_due(self) -> float | None:
        """Start sending each account's oldest pending delivery that is due (one per account at a time); return
        the seconds until the next one that is not due yet (None: none is waiting)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"""select account_id, delivery_id, extract(epoch from next_attempt_at - now())::float8 from (
                        select distinct on (d.account_id) d.account_id, d.delivery_id, d.next_attempt_at
                        from {TABLES["webhook_deliveries"]} d where d.status = 'pending'
                        order by d.account_id, d.seq
                    ) oldest"""
            )
            oldest = await cur.fetchall()
        later = [wait for _, _, wait in oldest if wait > 0]
        for account_id, delivery_id, wait in oldest:
            if wait > 0 or account_id in self._in_flight:
                continue
            task = asyncio.create_task(self._deliver(delivery_id))
            self._in_flight[account_id] = task
            task.add_done_callback(lambda _t, a=account_id: self._ended(a))
        return min(later, default=None)

    def _ended(self, account_id: UUID) -> None:
        """An attempt ended: the account's next delivery (or this one's retry) may be due."""
        self._in_flight.pop(account_id, None)
        self.look()

    async def _deliver(self, delivery_id: UUID) -> None:
        async with self._slots:
            try:
                await self.attempt(delivery_id)
            except Exception:
                log.exception("webhook delivery %s failed unexpectedly; will retry", delivery_id)

    async def attempt(self, delivery_id: UUID) -> None:
        """One attempt at one delivery, recorded with its outcome."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"""select d.body, d.event_id, d.attempts, d.retry_until, d.manual, e.url, e.endpoint_id
                    from {TABLES["webhook_deliveries"]} d join {TABLES["webhook_endpoints"]} e using (endpoint_id)
                    where d.delivery_id = %s and d.status = 'pending'""",
                (delivery_id,),
            )
            row = await cur.fetchone()
        if row is None:
            return
        body, event_id, attempts, retry_until, manual, url, endpoint_id = row
        started, at = time.monotonic(), datetime.now(timezone.utc)
        status_code, error = await self._post(url, body.encode(), endpoint_id, event_id)
        latency_ms = int((time.monotonic() - started) * 1000)
        ok = status_code is not None and 200 <= status_code < 300
        now = datetime.now(timezone.utc)
        next_at = now + timedelta(seconds=retry_delay(attempts + 1, self.retry_base))
        status = "delivered" if ok else ("failed" if next_at > retry_until else "pending")
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                f"""insert into {TABLES["webhook_attempts"]} (delivery_id, attempt, at, status_code, latency_ms, error,
                    manual) values (%s, %s, %s, %s, %s, %s, %s)""",
                (delivery_id, attempts + 1, at, status_code, latency_ms, error, manual),
            )
            await conn.execute(
                f"""update {TABLES["webhook_deliveries"]} set status = %s, attempts = attempts + 1, manual = false,
                    next_attempt_at = %s, last_status = %s, last_error = %s,
                    delivered_at = case when %s then now() else delivered_at end
                    where delivery_id = %s and status = 'pending'""",
                (status, next_at, status_code, error, ok, delivery_id),
            )
        if not ok:
            log.info("webhook delivery %s attempt %d: %s", delivery_id, attempts + 1, error or status_code)

    async def _post(self, url: str, body: bytes, endpoint_id: UUID, event_id: UUID) -> tuple[int | None, str | None]:
        """POST to the address just checked (not a second lookup a rebinding DNS could answer differently): the URL
        names that address, the Host header and TLS's server name (certificate check included) the host."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            addresses = await checked_addresses(
                host, parts.port or (443 if parts.scheme == "https" else 80), self.allow_private
            )
        except Refused as exc:
            return None, str(exc)[:MAX_ERROR_LENGTH]
        timestamp = int(time.time())
        headers = {
            "host": parts.netloc,
            "content-type": "application/json",
            "user-agent": "Mesh-Webhooks/1",
            "mesh-event-id": str(event_id),
            SIGNATURE_HEADER: signature(endpoint_secret(self.signing_key, endpoint_id), timestamp, body),
        }
        pinned = httpx.URL(url).copy_with(host=pinned_address(addresses))
        try:
            request = self.client.build_request(
                "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": host}
            )
            response = await self.client.send(request, stream=True)
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
            finally:
                await response.aclose()
            if 300 <= response.status_code < 400:
                return response.status_code, "redirects are not followed; give the endpoint's final URL"
            if response.status_code >= 400:
                return response.status_code, f"the endpoint answered {response.status_code}"
            return response.status_code, None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


def pinned_address(addresses: list[str]) -> str:
    """The address to connect to: the first IPv4 one, else the first (all of them were checked)."""
    return next((a for a in addresses if ":" not in a), addresses[0]).split("%", 1)[0]
