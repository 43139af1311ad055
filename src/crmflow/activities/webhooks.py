"""The `webhook` action: one HTTP request per (enrollment, action), as far as the receiver can tell.

An HTTP call cannot join the store's transaction, so exactly-once is built from two halves:
- the step row is written after the response, in one transaction; a retry that finds it returns
  the stored result without calling again (a crash after the step was stored sends nothing);
- every attempt carries the same `Idempotency-Key`, derived from the Temporal workflow id and
  the action id, so a receiver dedupes the window in between (a crash after the receiver
  answered, before the step was stored, sends one more request with the same key).

Failures: a timeout, a connection error, a 5xx and a 429 raise a retryable error (Temporal retries
with backoff per `worker._policies.WEBHOOK`; a 429's `Retry-After` sets the next delay); any other
4xx, a refused address, a bad template or a missing `${env:NAME}` is a permanent failure stored on
the step, and the enrollment goes on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from crmflow.definitions import WebhookAction
from crmflow.store import RecordRepository
from crmflow.templates import TemplateProblem

from ._once import Checkpoint, idempotency_key, no_checkpoint, run_outward
from ._templating import render_for
from .models import ActionInput, ActionResult, EnrollmentContext

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
# Longest Retry-After honoured; a longer one is capped (the retry period is bounded anyway).
MAX_RETRY_AFTER = timedelta(minutes=10)


class Refused(Exception):
    """A permanent failure of the request before it is sent; the message is for the user."""


def resolve_env(value: str, env: Mapping[str, str], render_text: Callable[[str], str]) -> str:
    """Render the template parts of a header value, then put in `${env:NAME}` values. The env
    values are never rendered and a rendered record property never becomes an env reference:
    a record cannot make the worker leak a variable it was not configured to send."""
    parts = _ENV_REF.split(value)
    out = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(render_text(part) if part else "")
        else:
            if part not in env:
                raise Refused(f"environment variable {part} is not set on the worker")
            out.append(env[part])
    return "".join(out)


# IPv6 ranges that carry an IPv4 address in their last 32 bits, which a translator or tunnel
# on the way may deliver to: NAT64's well-known prefix (RFC 6052), IPv4-compatible (deprecated,
# RFC 4291) and IPv4-translated (SIIT, RFC 2765) addresses.
_LAST_32_BITS_IPV4 = tuple(
    ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96")
)
# Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the length of the prefix
# the operator chose, and nothing in it is globally reachable: refused whole.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
# ISATAP interface identifiers (RFC 5214): 0000:5efe or 0200:5efe, then an IPv4 address.
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may lead to: mapped, 6to4, Teredo (server and
    client), NAT64, IPv4-compatible, IPv4-translated and ISATAP forms."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in _LAST_32_BITS_IPV4):
        found.append(low32)
    if (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(low32)
    return found


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not ip.is_global or ip.is_multicast


def forbidden_address(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified: anything not global,
    also when it hides in an IPv6 address that embeds an IPv4 one (see `embedded_ipv4`)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _not_public(ip)
    if ip in _LOCAL_NAT64:
        return True
    if ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is the IPv4 host itself: judged by that address alone.
        return _not_public(ip.ipv4_mapped)
    return _not_public(ip) or any(_not_public(v4) for v4 in embedded_ipv4(ip))


async def checked_address(host: str, port: int) -> str:
    """Resolve `host` and refuse it when any of its addresses is not public; returns the address
    to connect to (the one checked: a second resolution could answer differently)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # Retryable: DNS failures are usually transient.
        raise ApplicationError(f"cannot resolve {host}: {exc.strerror}", type="DnsError") from None
    addresses = [str(info[4][0]) for info in infos]
    refused = [a for a in addresses if forbidden_address(a)]
    if refused:
        what = "is" if refused[0] == host else f"resolves to {refused[0]},"
        raise Refused(
            f"{host} {what} a private, loopback or link-local address: "
            "refused (CRMFLOW_ALLOW_PRIVATE_WEBHOOKS=1 allows it)"
        )
    return addresses[0]


def retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """A Retry-After header (seconds or an HTTP date), capped at MAX_RETRY_AFTER."""
    if not value:
        return None
    value = value.strip()
    try:
        delay = timedelta(seconds=max(0.0, float(value)))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = max(timedelta(0), when - now)
    return min(delay, MAX_RETRY_AFTER)


def classify(response: httpx.Response, *, label: str) -> ActionResult:
    """The step result of a response, or raise the retryable error it calls for."""
    status = response.status_code
    if 200 <= status < 300:
        return ActionResult(outcome=f"{label}: {status}", detail={"status": status})
    if status == 429:
        delay = retry_after(response.headers.get("retry-after"), now=datetime.now(UTC))
        raise ApplicationError(
            f"{label}: 429 Too Many Requests", type="WebhookThrottled", next_retry_delay=delay
        )
    if status >= 500:
        raise ApplicationError(f"{label}: {status}", type="WebhookServerError")
    if 300 <= status < 400:
        where = response.headers.get("location", "?")
        return ActionResult(
            outcome=f"failed: {label}: {status} redirect to {where} (redirects are not followed)",
            failed=True,
            detail={"status": status},
        )
    return ActionResult(
        outcome=f"failed: {label}: {status} {response.reason_phrase}".rstrip(),
        failed=True,
        detail={"status": status},
    )


class RateLimiter:
    """At most `rate` requests per second per key, in this worker process; callers wait their
    turn (in arrival order) instead of being dropped. A turn further away than `max_wait` is not
    waited for in the activity: the caller is told when to come back, and the workflow waits on
    a timer, so a long queue never times an attempt out nor uses up its retries."""

    def __init__(self, rate: float | None, *, max_wait: float = 30.0) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.max_wait = max_wait
        self._next: dict[str, float] = {}

    def delay(self, key: str) -> float:
        """Book the next slot of `key` and return how long to wait for it; a slot further than
        `max_wait` away is not booked, and its (negated) distance is returned."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        slot = max(now, self._next.get(key, now))
        if slot - now > self.max_wait:
            return -(slot - now)
        self._next[key] = slot + self.interval
        return slot - now

    async def turn(self, key: str) -> float | None:
        """Wait for a booked turn (None), or return in how many seconds to ask again."""
        delay = self.delay(key)
        if delay < 0:
            return -delay
        if delay > 0:
            await asyncio.sleep(delay)
        return None


class WebhookActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        allow_private: bool = False,
        rate: float | None = None,
        env: Mapping[str, str] | None = None,
        checkpoint: Checkpoint | None = None,
        dry_run: bool = False,
    ) -> None:
        self.sessions = sessions
        self.allow_private = allow_private
        self.dry_run = dry_run
        self.limiter = RateLimiter(rate)
        self.env = env if env is not None else os.environ
        self.checkpoint = checkpoint or no_checkpoint

    @activity.defn(name="call_webhook")
    async def call_webhook(self, input: ActionInput) -> ActionResult:
        action = input.action
        if not isinstance(action, WebhookAction):
            raise TypeError(f"call_webhook cannot run a {action.type} action")
        return await run_outward(self.sessions, input, lambda: self._call(input, action))

    async def _call(self, input: ActionInput, action: WebhookAction) -> ActionResult:
        key = idempotency_key(activity.info().workflow_id or "", action.id)
        try:
            result = await self._deliver(input, action, key)
        except Refused as exc:
            result = ActionResult(outcome=f"failed: {exc}", failed=True)
        attempt = activity.info().attempt
        return result.model_copy(update={"detail": {**result.detail, "attempt": attempt}})

    def _properties(self, ctx: EnrollmentContext) -> dict[str, Any]:
        with self.sessions() as session:
            record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
            return dict(record.properties) if record is not None else {}

    async def _deliver(self, input: ActionInput, action: WebhookAction, key: str) -> ActionResult:
        ctx = input.context
        props = await asyncio.to_thread(self._properties, ctx)

        def text(source: str) -> str:
            try:
                return render_for(ctx, source, props)
            except TemplateProblem as exc:
                raise Refused(str(exc)) from None

        try:
            url = httpx.URL(text(action.url).strip())
        except httpx.InvalidURL as exc:
            raise Refused(f"invalid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused(f"{url} is not an http:// or https:// URL")
        headers = {name: resolve_env(v, self.env, text) for name, v in action.headers.items()}
        headers["Idempotency-Key"] = key
        headers.setdefault("User-Agent", "crmflow")
        content = _body(action.body, text)
        if content is not None and not any(h.lower() == "content-type" for h in headers):
            headers["Content-Type"] = "application/json"
        label = f"{action.method} {url.copy_with(query=None)}"
        if self.dry_run:
            return ActionResult(outcome=f"simulated: {label} (not sent)")
        target, extensions = url, {}
        if not self.allow_private:
            address = await checked_address(url.host, url.port or _default_port(url))
            # Connect to the address that was checked (no second lookup to rebind), keeping
            # the name for the Host header and for TLS (SNI and certificate check).
            target = url.copy_with(host=address)
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
        later = await self.limiter.turn(ctx.workflow_key)
        if later is not None:
            return ActionResult(
                outcome=f"rate limit of {ctx.workflow_key}: {later:.0f}s of requests queued",
                retry_in=later,
            )
        self.checkpoint("before_effect", input)
        timeout = action.timeout.total_seconds()
        try:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                response = await client.request(
                    action.method, target, headers=headers, content=content, extensions=extensions
                )
        except httpx.TimeoutException:
            raise ApplicationError(
                f"{label}: timed out after {timeout:g}s", type="WebhookTimeout"
            ) from None
        except httpx.TransportError as exc:
            raise ApplicationError(
                f"{label}: {type(exc).__name__}: {exc}", type="WebhookConnection"
            ) from None
        self.checkpoint("after_effect", input)
        return classify(response, label=label)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _body(body: Any, text: Callable[[str], str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str):
        return text(body).encode()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return json.dumps(walk(body), ensure_ascii=False).encode()
