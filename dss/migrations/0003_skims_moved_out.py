"""The skim service moved to the ``skims`` app: its models leave the ``dss`` state (the
tables stay, now owned by ``skims``), and their content types follow, so that job events
and permissions recorded under ``dss`` keep pointing at the same rows."""

from django.db import migrations

MOVED = ["skimpart", "skiminput", "provenancerecord", "skimjob", "branchpreset"]


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if ContentType.objects.filter(app_label="skims", model=model).exists():
            continue
        ContentType.objects.filter(app_label="dss", model=model).update(app_label="skims")


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="skims", model__in=MOVED).update(app_label="dss")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("dss", "0002_branchpreset_provenancerecord_skimjob_skiminput_and_more"),
        ("skims", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name="skimjob", name="rerun_of"),
                migrations.RemoveField(model_name="skimjob", name="preset"),
                migrations.DeleteModel(name="SkimPart"),
                migrations.DeleteModel(name="SkimInput"),
                migrations.DeleteModel(name="ProvenanceRecord"),
                migrations.DeleteModel(name="SkimJob"),
                migrations.DeleteModel(name="BranchPreset"),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
