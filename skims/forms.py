"""Forms of the skim service: submitting a skim, filtering the provenance history."""

from __future__ import annotations

from django import forms

from dmu.models import Dataset, StorageElement
from dss.forms import ModelChoiceByIdField, ModelMultipleChoiceByIdField
from dss.jobs import JobState
from tagdb.models import CollectionState, TagCollection

from .models import BranchPreset, FailurePolicy, OutputFormat


class SkimForm(forms.Form):
    collections = ModelMultipleChoiceByIdField(
        label="TAG collections",
        queryset=TagCollection.objects.none(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 4}),
        help_text="Select events through these datasets' TAGs (hold Ctrl to pick several)",
    )
    datasets = forms.ModelMultipleChoiceField(
        label="Datasets without TAGs",
        queryset=Dataset.objects.none(),
        required=False,
        to_field_name="name",
        widget=forms.SelectMultiple(attrs={"size": 4}),
        help_text="Scanned event by event: slower, but works for any dataset",
    )
    selection = forms.CharField(
        label="Selection",
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "class": "mono"}),
        help_text="e.g. n_muon >= 2 && met > 40",
    )
    content = forms.ChoiceField(
        label="Branches to keep",
        choices=[
            ("all", "all branches of the input"),
            ("preset", "a site preset"),
            ("list", "my own list"),
        ],
        initial="all",
        widget=forms.RadioSelect,
    )
    preset = ModelChoiceByIdField(
        label="Preset", queryset=BranchPreset.objects.all(), required=False
    )
    branches = forms.CharField(
        label="Branch names or patterns",
        required=False,
        help_text="Comma-separated, e.g. Muon_*, NMuon, MET_px, MET_py",
    )
    output_format = forms.ChoiceField(
        label="Output format", choices=OutputFormat.choices, initial=OutputFormat.ROOT
    )
    output_tree = forms.CharField(
        label="Output tree name",
        max_length=128,
        required=False,
        help_text="Empty: the name of the input files' event tree",
    )
    copy_objects = forms.CharField(
        label="Objects to copy along",
        max_length=2000,
        required=False,
        help_text="Small objects of each input file that its output carries too, "
        "comma-separated names or patterns: metadata trees, histograms (e.g. Runs, cutflow*)",
    )
    merge_mb = forms.FloatField(
        label="Merge outputs to (MB)",
        required=False,
        help_text="Write files of about this size, each from several input files; "
        "empty: one output file per input file",
    )
    output_name = forms.CharField(
        label="Output dataset name", max_length=256, help_text="scope.name, e.g. user.alice.dimuons"
    )
    output_se = forms.ModelChoiceField(
        label="Output storage element",
        queryset=StorageElement.objects.all(),
        to_field_name="name",
        required=False,
    )
    event_limit = forms.IntegerField(
        label="Event limit", min_value=1, required=False, help_text="Stop after this many events"
    )
    good_runs = forms.CharField(
        label="Good-run list",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
        help_text='Keep only these runs and luminosity blocks: ATLAS XML or JSON {"run": '
        "[[first, last], …]}. Empty: every run.",
    )
    good_runs_file = forms.FileField(label="…or a good-run list file", required=False)
    lumi_gt = forms.CharField(
        label="Global tag for luminosity",
        required=False,
        max_length=80,
        help_text="A conditions global tag: the provenance record then holds the integrated "
        "luminosity of the selected events' luminosity blocks from its lumi payloads.",
    )
    run_on = forms.ChoiceField(
        label="Run on",
        required=False,
        initial="",
        help_text="The portal's own workers, a compute site whose pilots pass, or the "
        "sites the broker picks for each file",
    )
    failure_policy = forms.ChoiceField(
        label="If a file fails", choices=FailurePolicy.choices, initial=FailurePolicy.FAIL
    )
    force = forms.BooleanField(
        label="Run even if an identical skim already succeeded", required=False
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["collections"].queryset = TagCollection.objects.filter(
            state=CollectionState.READY
        ).select_related("dataset", "schema")
        self.fields["collections"].label_from_instance = lambda c: f"{c.dataset.name} ({c.schema})"
        self.fields["datasets"].queryset = Dataset.objects.all()
        from pilotchecker.models import Site, SiteStatus

        sites = Site.objects.filter(status=SiteStatus.ONLINE).values_list("name", flat=True)
        self.fields["run_on"].choices = [
            ("", "the portal's workers"),
            ("auto", "sites chosen automatically"),
            *((name, f"site {name}") for name in sites),
        ]

    def clean(self):
        data = super().clean()
        if not data.get("collections") and not data.get("datasets"):
            raise forms.ValidationError("Pick at least one TAG collection or dataset.")
        if data.get("content") == "preset" and not data.get("preset"):
            self.add_error("preset", "Pick a preset, or keep all branches.")
        if data.get("content") == "list" and not (data.get("branches") or "").strip():
            self.add_error("branches", "Name at least one branch or pattern.")
        return data

    def good_runs_input(self):
        """The good-run list as given: the uploaded file's bytes, else the text."""
        upload = self.cleaned_data.get("good_runs_file")
        return upload.read() if upload is not None else self.cleaned_data.get("good_runs")

    def copy_patterns(self) -> list[str]:
        return [c.strip() for c in (self.cleaned_data.get("copy_objects") or "").split(",")]

    def branch_patterns(self) -> list[str]:
        if self.cleaned_data.get("content") != "list":
            return []
        return [b.strip() for b in self.cleaned_data["branches"].split(",") if b.strip()]


class ProvenanceFilter(forms.Form):
    user = forms.CharField(label="User", required=False, max_length=150)
    dataset = forms.CharField(label="Dataset", required=False, max_length=256)
    state = forms.ChoiceField(
        label="State", required=False, choices=[("", "any")] + JobState.choices
    )
    since = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
