"""Conditions pages: global tags, one tag's payload lists and IOVs, two tags compared, a
payload type's IOVs on a run axis, and locking a tag (admin or conditions manager)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dss.errors import DSSError

from . import actions
from .models import GlobalTag, PayloadIOV

SHOWN_IOVS = 500


def global_tags(request):
    tags = list(actions.global_tags_with_counts())
    return render(
        request,
        "conditions/global_tags.html",
        {"tags": tags, "may_write": actions.may_write(request.user)},
    )


def global_tag(request, name: str):
    gt = actions.get_global_tag(name)
    lists = []
    for pl in gt.payload_lists.select_related("payload_type").order_by("payload_type__name"):
        iovs = list(pl.iovs.all()[: SHOWN_IOVS + 1])
        lists.append({"list": pl, "iovs": iovs[:SHOWN_IOVS], "more": len(iovs) > SHOWN_IOVS})
    return render(
        request,
        "conditions/global_tag.html",
        {"gt": gt, "lists": lists, "may_write": actions.may_write(request.user)},
    )


@require_POST
def global_tag_status(request, name: str):
    gt = actions.get_global_tag(name)
    if not actions.may_write(request.user):
        raise PermissionDenied("locking a global tag needs the admin or conditions-manager role")
    status = request.POST.get("status", "")
    try:
        actions.do_set_status(request.user, gt, status)
    except DSSError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"Global tag {gt.name} is now {status}.")
    return redirect("conditions:global_tag", name=gt.name)


def compare(request):
    a_name, b_name = request.GET.get("a", ""), request.GET.get("b", "")
    ctx = {"tags": GlobalTag.objects.order_by("name"), "a": a_name, "b": b_name}
    if a_name and b_name:
        a, b = actions.get_global_tag(a_name), actions.get_global_tag(b_name)
        ctx["diffs"] = actions.compare_global_tags(a, b)
    return render(request, "conditions/compare.html", ctx)


def run_axis(request, name: str):
    """A payload type's IOVs in one global tag, drawn along the run (major) axis."""
    pt = actions.get_payload_type(name)
    tags = GlobalTag.objects.filter(payload_lists__payload_type=pt).order_by("name").distinct()
    gt_name = request.GET.get("gt") or (tags[0].name if tags else "")
    iovs, bars, axis = [], [], None
    if gt_name:
        gt = actions.get_global_tag(gt_name)
        iovs = list(
            PayloadIOV.objects.filter(payload_list__global_tag=gt, payload_list__payload_type=pt)[
                :SHOWN_IOVS
            ]
        )
    if iovs:
        first = iovs[0].major_iov
        last = max((i.major_iov_end or i.major_iov + 1) for i in iovs)
        last = max(last, max(i.major_iov for i in iovs) + 1)
        span = max(last - first, 1)
        width = 900
        for n, i in enumerate(iovs):
            end = i.major_iov_end if i.major_iov_end is not None else last
            x = (i.major_iov - first) * width / span
            w = max((end - i.major_iov) * width / span, 1.5)
            bars.append(
                {
                    "x": round(x, 1),
                    "w": round(w, 1),
                    "y": 8 + (n % 2) * 14,
                    "iov": i,
                    "open": i.end is None,
                }
            )
        axis = {"first": first, "last": last, "width": width}
    return render(
        request,
        "conditions/run_axis.html",
        {"pt": pt, "tags": tags, "gt": gt_name, "iovs": iovs, "bars": bars, "axis": axis},
    )
