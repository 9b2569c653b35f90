"""The form edge shared by every app: a domain error becomes an error on the form field it
concerns."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from .errors import DSSError


def add_domain_error(form: forms.Form, err: DSSError, field: str | None = None) -> None:
    """Attach ``err`` to ``field`` (or to the whole form), naming where it was found."""
    form.add_error(field if field in form.fields else None, str(err))


# The largest id a database column holds (a signed 64-bit integer).
MAX_ID = 2**63 - 1


def _out_of_range(values) -> bool:
    """Whether one of ``values`` is a whole number no id can be: SQLite raises OverflowError
    on such a number instead of finding nothing."""
    for v in values:
        text = str(v).strip()
        if text.lstrip("-").isdigit() and abs(int(text)) > MAX_ID:
            return True
    return False


class ModelChoiceByIdField(forms.ModelChoiceField):
    """A ModelChoiceField keyed by id that calls an id past any column's range invalid."""

    def to_python(self, value):
        if value not in self.empty_values and _out_of_range([value]):
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


class ModelMultipleChoiceByIdField(forms.ModelMultipleChoiceField):
    """A ModelMultipleChoiceField keyed by id that calls an id past any column's range
    invalid."""

    def _check_values(self, value):
        if _out_of_range(value if isinstance(value, list | tuple) else [value]):
            raise ValidationError(
                self.error_messages["invalid_pk_value"], code="invalid_pk_value", params={"pk": "…"}
            )
        return super()._check_values(value)
