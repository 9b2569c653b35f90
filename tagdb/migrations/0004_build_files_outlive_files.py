"""A build's record of a file (lfn, GUID, adler32) outlives the file leaving the dataset."""

import django.db.models.deletion
from django.db import migrations, models


def copy_names(apps, schema_editor):
    TagBuildFile = apps.get_model("tagdb", "TagBuildFile")
    for unit in TagBuildFile.objects.select_related("file"):
        TagBuildFile.objects.filter(pk=unit.pk).update(lfn=unit.file.lfn if unit.file else "")


class Migration(migrations.Migration):
    dependencies = [
        ("dmu", "0007_storageelement_user_writable"),
        ("tagdb", "0003_leases"),
    ]

    operations = [
        migrations.AddField(
            model_name="tagbuildfile",
            name="lfn",
            field=models.CharField(default="", max_length=256),
            preserve_default=False,
        ),
        migrations.RunPython(copy_names, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="tagbuildfile",
            name="file",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="dmu.file",
            ),
        ),
        migrations.AlterModelOptions(
            name="tagbuildfile",
            options={"ordering": ["build", "lfn"]},
        ),
    ]
