"""Portal-wide pages: the home dashboard and the user's account (API token)."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Sum
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from dmu.models import Dataset, File, StorageElement


def home(request):
    stats = File.objects.aggregate(events=Sum("events"), bytes=Sum("bytes"))
    ctx = {
        "n_datasets": Dataset.objects.count(),
        "n_files": File.objects.count(),
        "n_events": stats["events"] or 0,
        "n_bytes": stats["bytes"] or 0,
        "n_ses": StorageElement.objects.count(),
        "recent": Dataset.objects.order_by("-created_at")[:5],
    }
    return render(request, "home.html", ctx)


def account(request):
    token = Token.objects.filter(user=request.user).first()
    return render(request, "account.html", {"token": token})


@require_POST
def new_token(request):
    """Replace the user's API token (the old one stops working at once)."""
    Token.objects.filter(user=request.user).delete()
    Token.objects.create(user=request.user)
    messages.success(request, "A new API token was created; the old one no longer works.")
    return redirect("account")
