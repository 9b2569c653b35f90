from django import forms
from django.urls import reverse

from .models import Dataset, StorageElement


class RegisterForm(forms.Form):
    dataset = forms.CharField(
        label="Dataset name", max_length=256, help_text="scope.name, e.g. data24.zmumu_run3"
    )
    storage_element = forms.ModelChoiceField(
        label="Storage element", queryset=StorageElement.objects.all(), to_field_name="name"
    )
    paths = forms.CharField(
        label="Files",
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="One path per line, relative to the storage element's root",
    )
    tree = forms.CharField(
        label="Event tree", max_length=200, required=False, help_text="Default: events"
    )

    def clean_paths(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["paths"].splitlines() if line.strip()]
        if not lines:
            raise forms.ValidationError("Give at least one file.")
        return lines


class TransferForm(forms.Form):
    """A dataset (all of it, or the files ticked) to copy to a destination storage element."""

    dataset = forms.ModelChoiceField(
        label="Dataset", queryset=Dataset.objects.all(), to_field_name="name"
    )
    files = forms.MultipleChoiceField(
        label="Files",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Tick some to copy only those; leave all unticked to copy every file",
    )
    destination = forms.ModelChoiceField(
        label="Destination",
        queryset=StorageElement.objects.all(),
        to_field_name="name",
        help_text="Each file lands at its deterministic path scope/xx/yy/name",
    )
    source = forms.ModelChoiceField(
        label="Copy from",
        queryset=StorageElement.objects.all(),
        to_field_name="name",
        required=False,
        empty_label="any storage element holding the file",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name = self.data.get("dataset") if self.is_bound else self.initial.get("dataset")
        dataset = Dataset.objects.filter(name=name).first() if name else None
        files = dataset.files.order_by("lfn") if dataset else []
        self.fields["files"].choices = [
            (f.lfn, f"{f.lfn} ({f.events:,} events, {f.bytes:,} bytes)") for f in files
        ]
        # Picking another dataset reloads the file list (htmx).
        self.fields["dataset"].widget.attrs.update(
            {
                "hx-get": reverse("dmu:transfer_new"),
                "hx-target": "#transfer-files",
                "hx-select": "#transfer-files",
                "hx-swap": "outerHTML",
            }
        )
