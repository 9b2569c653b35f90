"""The skim service's models, moved from the ``dss`` app (whose tables they keep until
the next migration renames them): the state changes here, the database does not."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("dmu", "0001_initial"),
        ("tagdb", "0001_initial"),
        ("dss", "0002_branchpreset_provenancerecord_skimjob_skiminput_and_more"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="BranchPreset",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=64, unique=True)),
                        ("description", models.CharField(blank=True, max_length=200)),
                        (
                            "patterns",
                            models.JSONField(
                                help_text="branch names or glob patterns, e.g. Muon_*"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dss_branchpreset",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="ProvenanceRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "created_at",
                            models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                        ),
                        ("username", models.CharField(db_index=True, max_length=150)),
                        ("state", models.CharField(db_index=True, max_length=16)),
                        ("selection", models.TextField()),
                        ("selection_normalised", models.TextField()),
                        ("selection_tree", models.JSONField()),
                        ("options", models.JSONField()),
                        ("inputs", models.JSONField()),
                        ("outputs", models.JSONField()),
                        ("software", models.JSONField()),
                        ("workers", models.JSONField(default=list)),
                        ("timing", models.JSONField(default=dict)),
                        (
                            "output_dataset_name",
                            models.CharField(blank=True, db_index=True, max_length=256),
                        ),
                        (
                            "input_dataset_names",
                            models.TextField(
                                blank=True, help_text="space-separated, for filtering"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dss_provenancerecord",
                        "ordering": ["-created_at"],
                    },
                ),
                migrations.CreateModel(
                    name="SkimJob",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("queued", "queued"),
                                    ("running", "running"),
                                    ("succeeded", "succeeded"),
                                    ("partial", "partial"),
                                    ("failed", "failed"),
                                    ("cancelled", "cancelled"),
                                ],
                                default="queued",
                                max_length=16,
                            ),
                        ),
                        ("progress_done", models.BigIntegerField(default=0)),
                        ("progress_total", models.BigIntegerField(default=0)),
                        ("message", models.TextField(blank=True)),
                        (
                            "created_at",
                            models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                        ),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("selection", models.TextField(max_length=4000)),
                        ("selection_normalised", models.TextField(blank=True)),
                        ("selection_tree", models.JSONField(blank=True, default=dict)),
                        (
                            "branches",
                            models.JSONField(
                                blank=True, default=list, help_text="names or patterns; empty: all"
                            ),
                        ),
                        (
                            "output_format",
                            models.CharField(
                                choices=[
                                    ("root", "ROOT TTree"),
                                    ("rntuple", "ROOT RNTuple"),
                                    ("parquet", "Parquet"),
                                ],
                                default="root",
                                max_length=16,
                            ),
                        ),
                        ("output_name", models.CharField(db_index=True, max_length=256)),
                        ("event_limit", models.BigIntegerField(blank=True, null=True)),
                        (
                            "failure_policy",
                            models.CharField(
                                choices=[
                                    ("fail", "fail the whole skim"),
                                    ("partial", "keep the files that succeeded"),
                                ],
                                default="fail",
                                max_length=16,
                            ),
                        ),
                        ("request_hash", models.CharField(db_index=True, max_length=64)),
                        ("events_selected", models.BigIntegerField(default=0)),
                        ("events_written", models.BigIntegerField(default=0)),
                        ("finishing", models.BooleanField(default=False)),
                        (
                            "output_dataset",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="produced_by",
                                to="dmu.dataset",
                            ),
                        ),
                        (
                            "output_se",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="dmu.storageelement",
                            ),
                        ),
                        (
                            "owner",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "preset",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                to="skims.branchpreset",
                            ),
                        ),
                        (
                            "rerun_of",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="reruns",
                                to="skims.provenancerecord",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dss_skimjob",
                        "ordering": ["-created_at"],
                        "permissions": [
                            ("rerun_skimjob", "Can re-run a skim from its provenance record")
                        ],
                        "abstract": False,
                    },
                ),
                migrations.CreateModel(
                    name="SkimInput",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("schema_name", models.CharField(blank=True, max_length=64)),
                        ("schema_version", models.PositiveIntegerField(blank=True, null=True)),
                        (
                            "collection",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="tagdb.tagcollection",
                            ),
                        ),
                        (
                            "dataset",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="dmu.dataset",
                            ),
                        ),
                        (
                            "skim",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="inputs",
                                to="skims.skimjob",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dss_skiminput",
                        "ordering": ["id"],
                    },
                ),
                migrations.AddField(
                    model_name="provenancerecord",
                    name="skim",
                    field=models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="provenance",
                        to="skims.skimjob",
                    ),
                ),
                migrations.CreateModel(
                    name="SkimPart",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("number", models.PositiveIntegerField()),
                        (
                            "entries",
                            models.BinaryField(
                                help_text="selected entry numbers, int64, zlib-compressed"
                            ),
                        ),
                        ("n_entries", models.BigIntegerField()),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("queued", "queued"),
                                    ("running", "running"),
                                    ("succeeded", "succeeded"),
                                    ("failed", "failed"),
                                    ("cancelled", "cancelled"),
                                ],
                                default="queued",
                                max_length=16,
                            ),
                        ),
                        ("attempts", models.PositiveIntegerField(default=0)),
                        ("task_id", models.CharField(blank=True, max_length=64)),
                        ("worker", models.CharField(blank=True, max_length=200)),
                        ("message", models.TextField(blank=True)),
                        ("output_lfn", models.CharField(blank=True, max_length=256)),
                        ("output_path", models.CharField(blank=True, max_length=1000)),
                        ("output_guid", models.CharField(blank=True, max_length=36)),
                        ("output_bytes", models.BigIntegerField(blank=True, null=True)),
                        ("output_adler32", models.CharField(blank=True, max_length=8)),
                        ("events_written", models.BigIntegerField(default=0)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "input_file",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="dmu.file",
                            ),
                        ),
                        (
                            "skim",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="parts",
                                to="skims.skimjob",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dss_skimpart",
                        "ordering": ["skim", "number"],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("skim", "number"), name="skimpart_unique_number"
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
