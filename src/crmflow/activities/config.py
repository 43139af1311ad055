"""Settings of the outward actions, read from the worker's environment (SPEC §5).

`main()` (the worker and `up`) reads them once and hands them to the activities; nothing here
reads the environment at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from crmflow.definitions import parse_duration

from ._secrets import ENV_NAME, SECRET_PREFIX

# "auto" (CRMFLOW_SMTP_TLS unset): STARTTLS when the server offers it; see `messages.smtp_send`.
SmtpTls = Literal["auto", "none", "starttls", "tls"]


class ConfigError(ValueError):
    """Bad configuration; the message names the variable (shown as one line, exit code 2)."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    tls: SmtpTls = "auto"
    user: str | None = None
    password: str | None = None
    sender: str = "crmflow@localhost"
    timeout: float = 30.0


@dataclass(frozen=True)
class OutwardSettings:
    smtp: SmtpSettings | None = None
    allow_private_webhooks: bool = False
    # Webhook requests per second per workflow key; None: no limit.
    webhook_rate: float | None = None
    # CRMFLOW_WEBHOOK_ENV: names `${env:NAME}` may read besides CRMFLOW_SECRET_*.
    webhook_env: frozenset[str] = frozenset()
    # CRMFLOW_ACTIONS: "name=module:function,..." (custom action handlers).
    actions: str | None = None
    # `simulate`: nothing leaves the worker (no request, no SMTP, no custom handler is called);
    # steps say what would have happened.
    dry_run: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OutwardSettings:
        return cls(
            smtp=_smtp(env),
            allow_private_webhooks=_flag(env, "CRMFLOW_ALLOW_PRIVATE_WEBHOOKS"),
            webhook_rate=_rate(env),
            webhook_env=_webhook_env(env),
            actions=_actions(env),
        )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name}={env[name]!r}: expected 1 or 0")


def _rate(env: Mapping[str, str]) -> float | None:
    name = "CRMFLOW_WEBHOOK_RATE"
    text = (env.get(name) or "").strip()
    if not text:
        return None
    try:
        rate = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a number of requests per second") from None
    if not rate > 0:
        raise ConfigError(f"{name}={text!r}: must be greater than 0")
    return rate


def _webhook_env(env: Mapping[str, str]) -> frozenset[str]:
    variable = "CRMFLOW_WEBHOOK_ENV"
    names = {name.strip() for name in (env.get(variable) or "").split(",")} - {""}
    for name in sorted(names):
        if not ENV_NAME.match(name):
            raise ConfigError(f"{variable}: {name!r} is not an environment variable name")
        if name.startswith("CRMFLOW_") and not name.startswith(SECRET_PREFIX):
            raise ConfigError(
                f"{variable}: {name} is one of crmflow's own settings and is never sent to "
                f"webhooks (name a secret {SECRET_PREFIX}...)"
            )
    return frozenset(names)


def _smtp(env: Mapping[str, str]) -> SmtpSettings | None:
    host = (env.get("CRMFLOW_SMTP_HOST") or "").strip()
    if not host:
        return None
    tls_text = (env.get("CRMFLOW_SMTP_TLS") or "").strip().lower() or "auto"
    if tls_text not in ("none", "starttls", "tls", "auto"):
        raise ConfigError(f"CRMFLOW_SMTP_TLS={tls_text!r}: expected none, starttls or tls")
    tls: SmtpTls = tls_text  # type: ignore[assignment]
    port_text = (env.get("CRMFLOW_SMTP_PORT") or "").strip()
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"CRMFLOW_SMTP_PORT={port_text!r}: not a port number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"CRMFLOW_SMTP_PORT={port_text!r}: not a port number")
    else:
        port = {"auto": 25, "none": 25, "starttls": 587, "tls": 465}[tls]
    sender = env.get("CRMFLOW_SMTP_FROM") or f"crmflow@{host}"
    if "\r" in sender or "\n" in sender:
        raise ConfigError("CRMFLOW_SMTP_FROM: contains a line break")
    return SmtpSettings(
        host=host,
        port=port,
        tls=tls,
        user=env.get("CRMFLOW_SMTP_USER") or None,
        password=env.get("CRMFLOW_SMTP_PASSWORD") or None,
        sender=sender,
    )


def _actions(env: Mapping[str, str]) -> str | None:
    spec = env.get("CRMFLOW_ACTIONS") or None
    parse_actions_setting(spec)  # checked now: a typo stops the worker, not an action later
    return spec


def parse_actions_setting(spec: str | None) -> dict[str, str]:
    """`name=module:function,...` -> {name: target}; ConfigError naming CRMFLOW_ACTIONS."""
    targets: dict[str, str] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, target = item.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or ":" not in target:
            raise ConfigError(f"CRMFLOW_ACTIONS: {item!r} is not name=module:function")
        targets[name] = target
    return targets


TIME_SWEEP_INTERVAL_VARIABLE = "CRMFLOW_TIME_SWEEP_INTERVAL"
_SWEEP_BOUNDS = (timedelta(seconds=1), timedelta(hours=1))


def time_sweep_interval(env: Mapping[str, str], default: timedelta) -> timedelta:
    """How often the time sweep runs: CRMFLOW_TIME_SWEEP_INTERVAL (a duration, `30s`, `1m`),
    from 1 s to 1 h; `default` when unset."""
    name = TIME_SWEEP_INTERVAL_VARIABLE
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        interval = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={text!r}: {exc}") from None
    low, high = _SWEEP_BOUNDS
    if not low <= interval <= high:
        raise ConfigError(f"{name}={text!r}: must be from 1s to 1h")
    return interval


DISPATCH_PARTITIONS_VARIABLE = "CRMFLOW_DISPATCH_PARTITIONS"
DISPATCH_PARTITIONS = 4
_PARTITIONS_MAX = 256


def dispatch_partitions(env: Mapping[str, str]) -> int:
    """How many partitions the change feed is dispatched in: CRMFLOW_DISPATCH_PARTITIONS, from 1
    to 256 (DISPATCH_PARTITIONS when unset). Every worker of a deployment must use one number."""
    name = DISPATCH_PARTITIONS_VARIABLE
    text = (env.get(name) or "").strip()
    if not text:
        return DISPATCH_PARTITIONS
    if not text.isdigit() or not 1 <= int(text) <= _PARTITIONS_MAX:
        raise ConfigError(f"{name}={text!r}: a whole number from 1 to {_PARTITIONS_MAX}")
    return int(text)
