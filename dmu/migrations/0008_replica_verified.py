"""Replicas remember what their storage element said about them (size, modification time)
when their bytes were last verified, so that a reader need not read a whole file again to
trust it. Replicas registered before have nothing recorded: their next reader checks them
in full once and records it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dmu", "0007_storageelement_user_writable"),
    ]

    operations = [
        migrations.AddField(
            model_name="replica",
            name="verified_bytes",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="replica",
            name="verified_mtime_ns",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="replica",
            name="verified_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
