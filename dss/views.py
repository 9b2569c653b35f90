"""Pages of the portal as a whole that belong to no app: the user's account and API token."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token


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
