"""Forms of the TAG pages: start a build, query a collection (with a good-run list),
save a query, pick events."""

from __future__ import annotations

import json

from django import forms

from dmu.models import Dataset
from dss.errors import InvalidInput

from . import actions
from .actions import MAX_TOP
from .goodruns import MAX_BYTES as GRL_MAX_BYTES
from .goodruns import parse_good_run_list
from .selection import BOOL, FLOAT, MAX_LENGTH

FITTING = ""


class BuildForm(forms.Form):
    dataset = forms.ModelChoiceField(
        label="Dataset", queryset=Dataset.objects.order_by("name"), to_field_name="name"
    )
    schema = forms.ChoiceField(
        label="TAG schema",
        required=False,
        help_text="Which attributes to compute. The fitting schema is the builtin one whose "
        "branches the dataset's files have, else every numeric branch of the tree.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(FITTING, "The fitting schema (chosen from the files' branches)")]
        rows = list(actions.latest_schemas())
        asked = (self.data or {}).get("schema", "")
        if str(asked).isdigit() and all(str(r.pk) != asked for r in rows):
            # A rebuild keeps its collection's schema, even when a newer version exists.
            rows += list(actions.TagSchema.objects.filter(pk=int(asked)))
        for row in rows:
            kind = "automatic" if row.automatic else f"tree {row.tree}"
            choices.append((str(row.pk), f"{row} ({kind})"))
        self.fields["schema"].choices = choices

    def clean_schema(self):
        value = self.cleaned_data["schema"]
        if value == FITTING:
            return None
        return actions.TagSchema.objects.get(pk=int(value))


def default_histogram_attribute(collection) -> str:
    """The attribute the page plots first: an indexed float, else any float, else the first."""
    schema = actions.collection_schema(collection)
    for attribute in schema.attributes:
        if attribute.type == FLOAT and attribute.index:
            return attribute.name
    for attribute in schema.attributes:
        if attribute.type == FLOAT:
            return attribute.name
    return schema.attributes[0].name


class QueryForm(forms.Form):
    """The collection page's query: read from the POST body the page sends (or from the
    URL of a link), with the good-run list as text or as an uploaded file."""

    selection = forms.CharField(
        label="Selection",
        required=False,
        strip=False,
        max_length=MAX_LENGTH * 4,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
    )
    attribute = forms.ChoiceField(label="Attribute", required=False)
    bins = forms.IntegerField(label="Bins", required=False, min_value=1, max_value=500)
    lo = forms.FloatField(label="From", required=False)
    hi = forms.FloatField(label="To", required=False)
    # The attribute that bins/lo/hi were chosen for: another attribute starts from automatic.
    range_for = forms.CharField(required=False, widget=forms.HiddenInput)
    top_attribute = forms.ChoiceField(label="Largest", required=False)
    top_n = forms.IntegerField(label="How many", required=False, min_value=1, max_value=MAX_TOP)
    good_runs = forms.CharField(
        label="Good-run list",
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 4, "spellcheck": "false", "placeholder": '{"148031": [[1, 250]]}'}
        ),
        help_text='ATLAS XML (<LumiRangeCollection>…) or JSON {"run": [[first, last], …]}. '
        "Empty: every run.",
    )
    good_runs_file = forms.FileField(label="…or a good-run list file", required=False)
    lumi_gt = forms.CharField(
        label="Global tag for luminosity",
        required=False,
        max_length=80,
        help_text="The conditions global tag whose lumi payloads give the integrated "
        "luminosity of the selected events' luminosity blocks. Empty: none.",
    )

    def __init__(self, collection, *args, **kwargs):
        super().__init__(*args, **kwargs)
        types = actions.attribute_types(collection)
        self.fields["attribute"].choices = [(name, name) for name in types]
        self.fields["top_attribute"].choices = [
            (name, name) for name, type_ in types.items() if type_ != BOOL
        ]
        self.defaults = {
            "selection": "",
            "attribute": default_histogram_attribute(collection),
            "bins": None,
            "lo": None,
            "hi": None,
            "top_attribute": default_histogram_attribute(collection),
            "top_n": 20,
            "range_for": "",
            "good_runs": "",
            "good_runs_file": "",
            "lumi_gt": "",
        }
        # The controls sit in the page's cards but submit with the selection box's form.
        for name, field in self.fields.items():
            if name != "selection":
                field.widget.attrs["form"] = "query"
        self.fields["bins"].widget.attrs["placeholder"] = "auto"
        self.fields["lo"].widget.attrs["placeholder"] = "auto"
        self.fields["hi"].widget.attrs["placeholder"] = "auto"
        self.fields["lo"].widget.attrs["step"] = "any"
        self.fields["hi"].widget.attrs["step"] = "any"

    def query(self) -> dict:
        """The cleaned query with defaults for what the URL left out or got wrong. An
        uploaded good-run list replaces the text one, as compact JSON once it reads well
        (so that the page carries it from request to request), else as given (so that
        the query answers with its error)."""
        values = dict(self.defaults)
        if self.is_bound:
            self.is_valid()
            for name, value in self.cleaned_data.items():
                if value not in (None, "") and name != "good_runs_file":
                    values[name] = value
            upload = self.cleaned_data.get("good_runs_file")
            if upload is not None:
                values["good_runs"] = self._read_upload(upload)
                values["good_runs_file"] = upload.name
            if values["range_for"] and values["range_for"] != values["attribute"]:
                values.update(bins=None, lo=None, hi=None)
        values["range_for"] = values["attribute"]
        for bound in ("lo", "hi"):
            if isinstance(values[bound], float) and values[bound].is_integer():
                values[bound] = int(values[bound])
        return values

    @staticmethod
    def _read_upload(upload) -> str | bytes:
        if upload.size > GRL_MAX_BYTES:
            return upload.read(GRL_MAX_BYTES + 1)  # the parser names the limit
        data = upload.read()
        try:
            grl = parse_good_run_list(data)
        except InvalidInput:
            return data
        return json.dumps(grl.to_json(), separators=(",", ":"))


class SaveQueryForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100)
    selection = forms.CharField(
        label="Selection", max_length=MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 2})
    )


class PickForm(forms.Form):
    events = forms.CharField(
        label="Run and event numbers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "148031 10507008\n148029 15818458"}),
        help_text="One pair per line (run event), or JSON [[run, event], …]",
    )
    file = forms.FileField(label="…or a file with the pairs", required=False)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "pick_%s")  # ids unique on the collection page
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            if upload.size > 5_000_000:
                raise forms.ValidationError("The file is larger than 5 MB.")
            data["text"] = upload.read()
        elif (data.get("events") or "").strip():
            data["text"] = data["events"]
        else:
            raise forms.ValidationError("Type some run and event numbers or choose a file.")
        return data
