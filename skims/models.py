"""The skim service: skim jobs, their inputs and parts, branch presets, provenance records."""

from django.db import models
from django.urls import reverse
from django.utils import timezone

from dss.jobs import FileWorkState, Job


class OutputFormat(models.TextChoices):
    ROOT = "root", "ROOT TTree"
    RNTUPLE = "rntuple", "ROOT RNTuple"
    PARQUET = "parquet", "Parquet"


class FailurePolicy(models.TextChoices):
    FAIL = "fail", "fail the whole skim"
    PARTIAL = "partial", "keep the files that succeeded"


class BranchPreset(models.Model):
    """A named set of branches kept by the site, such as "muons and MET"."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    patterns = models.JSONField(help_text="branch names or glob patterns, e.g. Muon_*")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SkimJob(Job):
    """A selection applied to one or more datasets, written out as a new dataset."""

    selection = models.TextField(max_length=4000)
    selection_normalised = models.TextField(blank=True)
    selection_tree = models.JSONField(default=dict, blank=True)
    preset = models.ForeignKey(BranchPreset, null=True, blank=True, on_delete=models.SET_NULL)
    branches = models.JSONField(default=list, blank=True, help_text="names or patterns; empty: all")
    output_format = models.CharField(
        max_length=16, choices=OutputFormat.choices, default=OutputFormat.ROOT
    )
    output_name = models.CharField(max_length=256, db_index=True)
    output_se = models.ForeignKey("dmu.StorageElement", on_delete=models.PROTECT, related_name="+")
    event_limit = models.BigIntegerField(null=True, blank=True)
    good_runs = models.JSONField(
        null=True,
        blank=True,
        help_text='the good-run list applied beside the selection, {"run": [[first, last], …]}',
    )
    failure_policy = models.CharField(
        max_length=16, choices=FailurePolicy.choices, default=FailurePolicy.FAIL
    )
    output_dataset = models.ForeignKey(
        "dmu.Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )
    request_hash = models.CharField(max_length=64, db_index=True)
    rerun_of = models.ForeignKey(
        "ProvenanceRecord", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    events_selected = models.BigIntegerField(default=0)
    events_written = models.BigIntegerField(default=0)
    finishing = models.BooleanField(default=False)

    class Meta(Job.Meta):
        permissions = [("rerun_skimjob", "Can re-run a skim from its provenance record")]

    def __str__(self) -> str:
        return f"skim #{self.pk} → {self.output_name}"

    def get_absolute_url(self) -> str:
        return reverse("skim", args=[self.pk])


class SkimInput(models.Model):
    """One input dataset of a skim, through its TAG collection or (without one) a scan."""

    skim = models.ForeignKey(SkimJob, on_delete=models.CASCADE, related_name="inputs")
    dataset = models.ForeignKey("dmu.Dataset", on_delete=models.PROTECT, related_name="+")
    collection = models.ForeignKey(
        "tagdb.TagCollection", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    schema_name = models.CharField(max_length=64, blank=True)
    schema_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.dataset.name


PartState = FileWorkState


class SkimPart(models.Model):
    """The work on one input file: read its selected entries, write and store one output file."""

    skim = models.ForeignKey(SkimJob, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    input_file = models.ForeignKey("dmu.File", on_delete=models.PROTECT, related_name="+")
    entries = models.BinaryField(help_text="selected entry numbers, int64, zlib-compressed")
    n_entries = models.BigIntegerField()
    state = models.CharField(max_length=16, choices=PartState.choices, default=PartState.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    output_lfn = models.CharField(max_length=256, blank=True)
    output_path = models.CharField(max_length=1000, blank=True)
    output_guid = models.CharField(max_length=36, blank=True)
    output_bytes = models.BigIntegerField(null=True, blank=True)
    output_adler32 = models.CharField(max_length=8, blank=True)
    events_written = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["skim", "number"]
        constraints = [
            models.UniqueConstraint(fields=["skim", "number"], name="skimpart_unique_number")
        ]

    def __str__(self) -> str:
        return f"part {self.number} of skim #{self.skim_id}"


class ProvenanceRecord(models.Model):
    """What a skim did, kept after the job: inputs, selection, software, outputs, timing."""

    skim = models.OneToOneField(SkimJob, on_delete=models.CASCADE, related_name="provenance")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    username = models.CharField(max_length=150, db_index=True)
    state = models.CharField(max_length=16, db_index=True)
    selection = models.TextField()
    selection_normalised = models.TextField()
    selection_tree = models.JSONField()
    options = models.JSONField()
    inputs = models.JSONField()
    outputs = models.JSONField()
    software = models.JSONField()
    workers = models.JSONField(default=list)
    timing = models.JSONField(default=dict)
    output_dataset_name = models.CharField(max_length=256, blank=True, db_index=True)
    input_dataset_names = models.TextField(blank=True, help_text="space-separated, for filtering")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"provenance of skim #{self.skim_id}"

    def get_absolute_url(self) -> str:
        return reverse("provenance", args=[self.pk])
