"""The skim service: skim jobs, their inputs and parts, branch presets, provenance records."""

from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from dss.jobs import FINAL_STATES, FileWorkState, Job, JobState
from dss.leases import Leased


class OutputFormat(models.TextChoices):
    ROOT = "root", "ROOT TTree"
    RNTUPLE = "rntuple", "ROOT RNTuple"
    PARQUET = "parquet", "Parquet"


class FailurePolicy(models.TextChoices):
    FAIL = "fail", "fail the whole skim"
    PARTIAL = "partial", "keep the files that succeeded"


class RunOn(models.TextChoices):
    """Where a skim's parts run."""

    PORTAL = "portal", "the portal's workers"
    SITE = "site", "a named site"
    AUTO = "auto", "a site chosen by the broker"


class SiteJobState(models.TextChoices):
    """A skim part's batch job on a site, as the portal follows it."""

    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"
    LOST = "lost", "lost"
    CANCELLED = "cancelled", "cancelled"


SITE_JOB_ACTIVE = (SiteJobState.QUEUED, SiteJobState.RUNNING)


class BranchPreset(models.Model):
    """A named set of branches kept by the site, such as "muons and MET"."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    patterns = models.JSONField(help_text="branch names or glob patterns, e.g. Muon_*")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SkimJob(Job, Leased):
    """A selection applied to one or more datasets, written out as a new dataset.

    The job row is itself a unit of work twice: planning (finding the selected entries and
    recording the parts) and finishing (registering the output, writing provenance). Each
    part is a unit of its own (:class:`SkimPart`)."""

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
    output_tree = models.CharField(
        max_length=128, default="events", help_text="the name of the output files' event tree"
    )
    copy_objects = models.JSONField(
        default=list,
        blank=True,
        help_text="names or glob patterns of small objects of the input files (metadata "
        "trees, histograms) copied into each output",
    )
    merge_mb = models.FloatField(
        null=True,
        blank=True,
        help_text="outputs are merged into files of about this many MB (10^6 bytes); "
        "empty: one output per input file",
    )
    good_runs = models.JSONField(
        null=True,
        blank=True,
        help_text='the good-run list applied beside the selection, {"run": [[first, last], …]}',
    )
    lumi_gt = models.CharField(
        max_length=80,
        blank=True,
        help_text="the conditions global tag whose lumi payloads give the integrated "
        "luminosity of the selected events, recorded in provenance; empty: none",
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
    # sha256 of the selected (file GUID, entry) list: two skims with the same digest
    # selected the same events.
    selection_digest = models.CharField(max_length=64, blank=True)
    run_on = models.CharField(
        max_length=16,
        choices=RunOn.choices,
        default=RunOn.PORTAL,
        help_text="the portal's workers, a named site, or a site the broker chooses per part",
    )
    site = models.ForeignKey(
        "pilotchecker.Site",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="the site named for run_on=site",
    )

    class Meta(Job.Meta):
        permissions = [("rerun_skimjob", "Can re-run a skim from its provenance record")]

    def __str__(self) -> str:
        return f"skim #{self.pk} → {self.output_name}"

    def get_absolute_url(self) -> str:
        return reverse("skim", args=[self.pk])

    # -- as a unit of work (dss.leases)

    @staticmethod
    def planned() -> Exists:
        return Exists(SkimPart.objects.filter(skim=OuterRef("pk")))

    @classmethod
    def waiting(cls) -> Q:
        """Queued for planning, or every part has ended and it waits to be finished."""
        busy = SkimPart.objects.filter(
            skim=OuterRef("pk"), state__in=[PartState.QUEUED, PartState.RUNNING]
        )
        return Q(state=JobState.QUEUED) | (
            Q(state=JobState.RUNNING) & Q(cls.planned()) & ~Q(Exists(busy))
        )

    @classmethod
    def working(cls) -> Q:
        return Q(state=JobState.RUNNING) & ~Q(lease_token="")

    def start_fields(self) -> dict:
        if self.state == JobState.QUEUED:
            return {"state": JobState.RUNNING, "started_at": timezone.now()}
        return {}

    def requeue_fields(self) -> dict:
        # A planning attempt records its parts in the same transaction that ends it, so a
        # skim without parts was being planned.
        return {} if self.parts.exists() else {"state": JobState.QUEUED}

    def lease_task_name(self) -> str:
        if self.state == JobState.QUEUED or not self.parts.exists():
            return "skims.tasks.plan_skim"
        return "skims.tasks.finish_skim"

    def give_up(self, message: str) -> None:
        from .actions import do_fail_skim

        do_fail_skim(self, message)

    def job_label(self) -> str:
        phase = "finishing" if self.parts.exists() else "planning"
        return f"skim #{self.pk} ({phase})"

    def log_event(self, kind: str, message: str) -> None:
        self.log(kind, message)


class SkimInput(models.Model):
    """One input dataset of a skim, through its TAG collection or (without one) a scan."""

    skim = models.ForeignKey(SkimJob, on_delete=models.CASCADE, related_name="inputs")
    dataset = models.ForeignKey("dmu.Dataset", on_delete=models.PROTECT, related_name="+")
    collection = models.ForeignKey(
        "tagdb.TagCollection", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    schema_name = models.CharField(max_length=64, blank=True)
    schema_version = models.PositiveIntegerField(null=True, blank=True)
    # The TAG build whose TAGs selected the events (through a collection).
    tag_build = models.ForeignKey(
        "tagdb.TagBuild", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The files the skim selected from: [{"lfn", "guid", "adler32", "events"}, ...]. Given
    # at submission (a re-run pins the files of the skim it repeats), else recorded when
    # the skim is planned; provenance lists exactly these.
    files = models.JSONField(default=list, blank=True)
    pinned = models.BooleanField(
        default=False, help_text="select from exactly ``files``, whatever the dataset holds now"
    )
    # For a scan: the schema whose attribute definitions the selection is evaluated with
    # (a re-run of a skim whose TAG build is gone); empty: the fitting one.
    scan_schema = models.ForeignKey(
        "tagdb.TagSchema", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.dataset.name


PartState = FileWorkState


class SkimPart(Leased):
    """The work on one input file (or, when the skim merges its outputs, on a few input
    files in turn): read the selected entries, write and store one output file."""

    skim = models.ForeignKey(SkimJob, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    input_file = models.ForeignKey(
        "dmu.File", on_delete=models.PROTECT, related_name="+", help_text="its (first) input"
    )
    entries = models.BinaryField(
        help_text="selected entry numbers of input_file, int64, zlib-compressed"
    )
    n_entries = models.BigIntegerField(help_text="selected entries of all its inputs")
    n_inputs = models.PositiveIntegerField(
        default=1, help_text="input files merged into its output (the others: more_inputs)"
    )
    copied = models.JSONField(
        default=list, blank=True, help_text="the objects copied along into its output"
    )
    state = models.CharField(max_length=16, choices=PartState.choices, default=PartState.QUEUED)
    message = models.TextField(blank=True)
    output_lfn = models.CharField(max_length=256, blank=True)
    output_path = models.CharField(max_length=1000, blank=True)
    output_guid = models.CharField(max_length=36, blank=True)
    output_bytes = models.BigIntegerField(null=True, blank=True)
    output_adler32 = models.CharField(max_length=8, blank=True)
    events_written = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Where a part of a skim run on sites ran (its latest batch job; SiteJob keeps them all).
    site = models.ForeignKey(
        "pilotchecker.Site", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    batch_job_id = models.CharField(max_length=100, blank=True)
    batch_node = models.CharField(max_length=255, blank=True)
    job_state = models.CharField(max_length=16, choices=SiteJobState.choices, blank=True)
    job_attempts = models.PositiveIntegerField(default=0, help_text="batch jobs submitted for it")

    class Meta:
        ordering = ["skim", "number"]
        constraints = [
            models.UniqueConstraint(fields=["skim", "number"], name="skimpart_unique_number")
        ]

    def __str__(self) -> str:
        return f"part {self.number} of skim #{self.skim_id}"

    lease_task = "skims.tasks.run_part"

    @property
    def worker(self) -> str:
        """The host (and process) the part last ran on."""
        return self.lease_worker

    @classmethod
    def waiting(cls) -> Q:
        # Parts that run as batch jobs on a site are followed by their job, not by a lease.
        return Q(state=PartState.QUEUED, skim__state=JobState.RUNNING, skim__run_on=RunOn.PORTAL)

    @classmethod
    def working(cls) -> Q:
        return Q(state=PartState.RUNNING) & ~Q(lease_token="")

    def start_fields(self) -> dict:
        return {"state": PartState.RUNNING, "started_at": timezone.now(), "message": ""}

    def requeue_fields(self) -> dict:
        return {"state": PartState.QUEUED}

    def give_up(self, message: str) -> None:
        from .actions import do_fail_part, finish_if_done

        do_fail_part(self, message)
        finish_if_done(self.skim_id)

    def discard_attempt(self, token: str) -> None:
        from .actions import discard_part_attempt

        discard_part_attempt(self, token)

    def job_label(self) -> str:
        return f"part {self.number} of skim #{self.skim_id} ({self.inputs_label})"

    @property
    def inputs_label(self) -> str:
        """Its input file, or its first and how many more it merges."""
        more = f" and {self.n_inputs - 1} more" if self.n_inputs > 1 else ""
        return f"{self.input_file.lfn}{more}"

    def log_event(self, kind: str, message: str) -> None:
        if self.skim.state not in FINAL_STATES:
            self.skim.log(kind, message, part=self.number)


class SkimPartInput(models.Model):
    """A further input file of a part that merges several into one output: the part reads
    its own input_file first, then these in ``position`` order."""

    part = models.ForeignKey(SkimPart, on_delete=models.CASCADE, related_name="more_inputs")
    position = models.PositiveIntegerField()
    file = models.ForeignKey("dmu.File", on_delete=models.PROTECT, related_name="+")
    entries = models.BinaryField(help_text="selected entry numbers, int64, zlib-compressed")
    n_entries = models.BigIntegerField()

    class Meta:
        ordering = ["part", "position"]
        constraints = [
            models.UniqueConstraint(fields=["part", "position"], name="skimpartinput_unique")
        ]

    def __str__(self) -> str:
        return f"{self.file.lfn} in {self.part}"


class SiteJob(models.Model):
    """One batch job that runs a skim part on a site: one attempt of the part.

    The job wrapper on the worker node reports its outcome once, with a one-time token of
    which only the SHA-256 is kept (as pilots do); the poller follows the batch system for
    jobs that never report."""

    part = models.ForeignKey(SkimPart, on_delete=models.CASCADE, related_name="site_jobs")
    attempt = models.PositiveIntegerField()
    site = models.ForeignKey("pilotchecker.Site", on_delete=models.CASCADE, related_name="+")
    state = models.CharField(
        max_length=16, choices=SiteJobState.choices, default=SiteJobState.QUEUED, db_index=True
    )
    message = models.TextField(blank=True)
    batch_job_id = models.CharField(max_length=100, blank=True)
    batch_raw_state = models.CharField(max_length=64, blank=True)
    node = models.CharField(max_length=255, blank=True)
    workdir = models.CharField(max_length=1000, blank=True)
    # names the temporary the job writes beside the part's output on the storage element
    output_tag = models.CharField(max_length=32)
    token_hash = models.CharField(max_length=64)
    token_expires_at = models.DateTimeField()
    token_used_at = models.DateTimeField(null=True, blank=True)
    report = models.JSONField(null=True, blank=True)
    site_fault = models.BooleanField(
        default=True,
        help_text="whether its failure may be the site's (not an input that is bad anywhere)",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["part", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["part", "attempt"], name="sitejob_unique_attempt")
        ]

    def __str__(self) -> str:
        return f"job {self.attempt} of {self.part} on {self.site_id and self.site.name}"

    @property
    def is_active(self) -> bool:
        return self.state in SITE_JOB_ACTIVE


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
    events_selected = models.BigIntegerField(default=0)
    selection_digest = models.CharField(
        max_length=64, blank=True, help_text="sha256 of the selected (file GUID, entry) list"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"provenance of skim #{self.skim_id}"

    def get_absolute_url(self) -> str:
        return reverse("provenance", args=[self.pk])
