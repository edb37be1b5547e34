"""Project API keys: make one (its secret shown once), revoke it, and authenticate a request's key.

A key reads ``bft_<prefix>_<secret>``: the prefix (8 letters and digits) finds the row, and the
SHA-256 of the whole key must match the stored digest (compared in constant time). A key works
while it is not revoked and its creator is still an active member of its project; it may do what
its scope allows, but never more than its creator may do now (``ApiKey.role``). The JSON API
(jobs/api/) and the model server both authenticate through :func:`authenticate`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db.models import OuterRef, Q, Subquery
from django.utils.timezone import now

from jobs.models import ApiKey, Membership, Project

if TYPE_CHECKING:
    from django.contrib.auth.models import User

KEY_START = "bft_"
PREFIX_CHARS = string.ascii_lowercase + string.digits
PREFIX_LENGTH = 8
SECRET_BYTES = 32
# last_used_at is written at most this often per key (not one UPDATE per request).
LAST_USED_EVERY = timedelta(minutes=1)


def _digest(raw: str) -> str:
    # The secret is random and long, so SHA-256 is enough (see jobs/models/api_keys.py).
    return hashlib.sha256(raw.encode()).hexdigest()


def create_api_key(*, project: Project, user: User, name: str, scope: str) -> tuple[ApiKey, str]:
    """A new key of ``project``: (the row, the whole key). The key is never stored or shown again."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"Unknown scope {scope!r}: use one of {', '.join(ApiKey.Scope.values)}.")
    name = name.strip()
    if not name:
        raise ValueError("Name the key (e.g. the pipeline that uses it).")
    prefix = "".join(secrets.choice(PREFIX_CHARS) for _ in range(PREFIX_LENGTH))
    raw = f"{KEY_START}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey.objects.create(
        project=project,
        name=name[:100],
        prefix=prefix,
        secret_hash=_digest(raw),
        scope=scope,
        created_by=user,
    )
    return key, raw


def revoke_api_key(*, key: ApiKey, user: User) -> bool:
    """Revoke ``key`` now; False if it was revoked already. Requests with it fail from now on."""
    revoked_at = now()
    changed = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=revoked_at, revoked_by=user
    )
    if changed:
        key.revoked_at, key.revoked_by = revoked_at, user
    return bool(changed)


def split_key(raw: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not raw.startswith(KEY_START) or len(raw) < len(KEY_START) + PREFIX_LENGTH + 2:
        return None
    prefix = raw[len(KEY_START) : len(KEY_START) + PREFIX_LENGTH]
    if raw[len(KEY_START) + PREFIX_LENGTH] != "_" or any(c not in PREFIX_CHARS for c in prefix):
        return None
    return prefix


def authenticate(raw: str) -> ApiKey | None:
    """The active key ``raw`` names, with its project, creator and ``role`` (what it may do now),
    or None: malformed, unknown, revoked, or its creator is inactive or left the project. One
    query, plus an UPDATE of ``last_used_at`` at most once a minute."""
    prefix = split_key(raw)
    if prefix is None:
        return None
    creator_role = Membership.objects.filter(
        project=OuterRef("project"), user=OuterRef("created_by")
    ).values("role")[:1]
    key = (
        ApiKey.objects.select_related("project", "created_by")
        .annotate(creator_role=Subquery(creator_role))
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(raw)):
        return None
    key.effective_role = key.role(getattr(key, "creator_role", None))
    if key.effective_role is None or not key.created_by.is_active:
        return None
    touch(key)
    return key


def touch(key: ApiKey) -> None:
    """Record that ``key`` was used, at most once a minute (a conditional UPDATE)."""
    moment = now()
    if key.last_used_at is not None and key.last_used_at > moment - LAST_USED_EVERY:
        return
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=moment - LAST_USED_EVERY)
    ).update(last_used_at=moment)
    key.last_used_at = moment
