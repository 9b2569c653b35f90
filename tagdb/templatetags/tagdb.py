"""Template helpers of the TAG pages and of the dataset page's TAG section."""

from __future__ import annotations

import json

from django import template
from django.utils.html import format_html

from dss.errors import InvalidInput
from tagdb import actions
from tagdb.goodruns import parse_good_run_list

register = template.Library()

# A collection's state shown with the colours of the job states it resembles.
_BADGE = {"ready": "succeeded", "building": "running", "failed": "failed", "empty": "cancelled"}


@register.simple_tag
def dataset_tag_collections(dataset):
    """The dataset's TAG collections, each with its ``latest_build``."""
    return actions.collections_for_dataset(dataset)


@register.simple_tag
def collection_badge(collection):
    return format_html(
        '<span class="badge state-{}">{}</span>',
        _BADGE.get(collection.state, collection.state),
        collection.get_state_display(),
    )


@register.filter
def short_guid(guid: str) -> str:
    return str(guid)[:8] + "…"


@register.filter
def value(v):
    """An attribute value for a table: floats to 4 significant digits, None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


@register.filter
def sum_counts(counts) -> int:
    return int(sum(int(c) for c in counts))


@register.filter
def good_runs_summary(recorded) -> str:
    """A recorded good-run list (``{"run": [[first, last], …]}``) in words:
    ``500 runs, 10,000 luminosity-block ranges``."""
    if not recorded:
        return ""
    try:
        return parse_good_run_list(recorded).describe()
    except InvalidInput as e:
        return f"unreadable ({e})"


@register.filter
def compact_json(value) -> str:
    """``value`` as JSON on one line (a recorded good-run list, to copy)."""
    return json.dumps(value, separators=(",", ":"))
