"""Deterministic names and label values derived from object names."""

from __future__ import annotations

import hashlib
import re

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

MAX_NAME = 63


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def shorten(name: str, limit: int = MAX_NAME) -> str:
    """``name`` itself when it fits, else a prefix + '-' + an 8-hex hash of the whole name.

    Deterministic: the same input always gives the same output, so a restarted operator
    derives the same Job name and never creates a second Job for one Trial."""
    if len(name) <= limit:
        return name
    digest = _digest(name)
    head = name[: limit - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}"


def job_name(trial_name: str) -> str:
    """The one Job of a Trial: ``kubenas-<trial name>``, truncated+hashed to 63 characters."""
    return shorten(f"kubenas-{trial_name}")


def label_value(value: str) -> str:
    """A valid label value for ``value`` (itself when valid; else shortened+hashed)."""
    if len(value) <= MAX_NAME and LABEL_VALUE_RE.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)
    out = shorten(cleaned).strip("-_.")
    if not LABEL_VALUE_RE.match(out) or out == "":
        out = _digest(value, 16)
    return out


def is_dns_label(name: str) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME and bool(DNS_LABEL_RE.match(name))
