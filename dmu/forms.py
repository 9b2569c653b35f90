from django import forms

from .models import StorageElement


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
