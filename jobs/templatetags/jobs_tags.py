"""Template tags: the project switcher (needs the user's projects on every page)."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("jobs/_project_switcher.html", takes_context=True)
def project_switcher(context: template.Context, project: Any = None) -> dict[str, Any]:
    from jobs.permissions import projects_of

    request = context.get("request")
    user = getattr(request, "user", None)
    return {"project": project or None, "projects": projects_of(user)}


@register.filter
def percent(value: float | None) -> str:
    """0.734 -> '73%' (fill rates, ratios)."""
    if value is None:
        return "–"
    return f"{round(float(value) * 100)}%"


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    """dict lookup by a variable key: {{ row|get_item:field }}; missing -> ''."""
    if isinstance(mapping, dict):
        value = mapping.get(key, "")
        return "" if value is None else value
    return ""


@register.filter
def get_count(mapping: Any, key: str) -> int:
    """{{ counts|get_count:value }} -> an int (0 when missing)."""
    if isinstance(mapping, dict):
        return int(mapping.get(key, 0))
    return 0


@register.filter
def thousands(value: Any) -> str:
    """12345 -> '12,345'."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)
