"""Storage elements say whether users may write their own datasets there.

Before, anyone who could skim wrote anywhere. The storage element that skims write to by
default (DSS_SKIM_OUTPUT_SE) stays open to users, so their skims go on working; every other
one is for admins until an admin opens it.
"""

from django.conf import settings
from django.db import migrations, models


def open_the_skim_output_se(apps, schema_editor):
    StorageElement = apps.get_model("dmu", "StorageElement")
    StorageElement.objects.filter(name=settings.DSS_SKIM_OUTPUT_SE).update(user_writable=True)


class Migration(migrations.Migration):
    dependencies = [
        ("dmu", "0006_replica_lost"),
    ]

    operations = [
        migrations.AddField(
            model_name="storageelement",
            name="user_writable",
            field=models.BooleanField(
                default=False,
                help_text="physicists may write datasets of their own scope (user.<name>.*) "
                "here; only admins write to other storage elements",
                verbose_name="users may write here",
            ),
        ),
        migrations.RunPython(open_the_skim_output_se, migrations.RunPython.noop),
    ]
