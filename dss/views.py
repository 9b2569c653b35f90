"""Pages of the portal as a whole that belong to no app: the user's account and API tokens,
and the answer to a locked-out login."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import tokens
from .errors import DSSError, NotFound
from .forms import add_domain_error
from .models import ApiToken

# The session key under which a new token's key waits to be shown, once.
NEW_KEY = "dss_new_token_key"


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=100, help_text="what it is for, e.g. laptop or batch jobs"
    )
    days = forms.IntegerField(
        label="Lasts (days)",
        min_value=1,
        max_value=settings.DSS_TOKEN_MAX_DAYS,
        initial=settings.DSS_TOKEN_DAYS,
        help_text=f"at most {settings.DSS_TOKEN_MAX_DAYS}",
    )


def account(request, form: TokenForm | None = None):
    ctx = {
        "tokens": ApiToken.objects.filter(user=request.user).select_related("replaced_by"),
        "new_key": request.session.pop(NEW_KEY, None),
        "form": form or TokenForm(),
    }
    return render(request, "account.html", ctx, status=400 if form is not None else 200)


def _show_once(request, issued: tokens.IssuedToken) -> None:
    request.session[NEW_KEY] = {"key": issued.key, "name": issued.token.name}


@require_POST
def token_create(request):
    """Make a new named token; its key is shown once, on the next page."""
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            issued = tokens.do_issue_token(
                request.user, form.cleaned_data["name"], form.cleaned_data["days"]
            )
        except DSSError as e:
            add_domain_error(form, e, e.where)
        else:
            _show_once(request, issued)
            return redirect("account")
    return account(request, form)


def _own_token(request, pk: int) -> ApiToken:
    try:
        return tokens.get_token_for_user(request.user, pk)
    except NotFound as e:
        raise Http404(e.message) from None


@require_POST
def token_rotate(request, pk: int):
    """Replace a token by a new one of the same name; the old one stops at once."""
    token = _own_token(request, pk)
    try:
        issued = tokens.do_rotate_token(token)
    except DSSError as e:
        messages.error(request, str(e))
    else:
        _show_once(request, issued)
        messages.success(request, f"Token {token.name} rotated: the old key no longer works.")
    return redirect("account")


@require_POST
def token_revoke(request, pk: int):
    token = _own_token(request, pk)
    if tokens.do_revoke_token(token):
        messages.success(request, f"Token {token.name} ({token.prefix}…) revoked.")
    return redirect("account")


def locked_out(request, original_response=None, credentials=None):
    """What a locked-out login gets (django-axes): the login page says so; the API answers
    429 with the usual JSON error body."""
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    detail = (
        f"too many failed logins for this user name from this address: try again in "
        f"{minutes} minutes"
    )
    if request.path.startswith("/api/"):
        response = JsonResponse(
            {"error": "locked_out", "detail": detail, "where": "username"}, status=429
        )
    else:
        response = render(request, "registration/locked_out.html", {"detail": detail}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
