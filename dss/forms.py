"""The form edge shared by every app: a domain error becomes an error on the form field it
concerns."""

from __future__ import annotations

from django import forms

from .errors import DSSError


def add_domain_error(form: forms.Form, err: DSSError, field: str | None = None) -> None:
    """Attach ``err`` to ``field`` (or to the whole form), naming where it was found."""
    form.add_error(field if field in form.fields else None, str(err))
