"""The skim tables take the ``skims`` app's names."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("skims", "0001_initial"),
        ("dss", "0003_skims_moved_out"),
    ]

    operations = [
        migrations.AlterModelTable(name=name, table=None)
        for name in ["branchpreset", "skimjob", "skiminput", "skimpart", "provenancerecord"]
    ]
