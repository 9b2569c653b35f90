"""Sites get contacts (who may read their pilots' reports), and free-text pilot commands go.

A site's ``commands`` requirement was text that the pilot ran on the worker node; on the
``local`` batch system that is the portal's own machine. Pilots now run only named checks.
Each site's old commands are mapped where the meaning is plain (``tool`` or
``tool --version`` becomes the requirement ``tools``); every other command is dropped, and
the site's history records which, so its admins can choose a named check instead.
"""

import re
import shlex

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

TOOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def as_tool(command) -> str | None:
    """The tool a command only asks the version of (``gcc``, ``gcc --version``), or None."""
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError:
            return None
    elif isinstance(command, list) and all(isinstance(a, str) for a in command):
        argv = command
    else:
        return None
    if len(argv) in (1, 2) and TOOL_RE.match(argv[0]) and argv[1:] in ([], ["--version"]):
        return argv[0]
    return None


def drop_free_text_commands(apps, schema_editor):
    Site = apps.get_model("pilotchecker", "Site")
    SiteStatusChange = apps.get_model("pilotchecker", "SiteStatusChange")
    for site in Site.objects.all():
        requirements = dict(site.requirements or {})
        commands = requirements.pop("commands", None)
        if commands is None:
            continue
        tools = list(requirements.get("tools") or [])
        dropped = []
        for command in commands if isinstance(commands, list) else [commands]:
            tool = as_tool(command)
            if tool is None:
                dropped.append(command if isinstance(command, str) else " ".join(map(str, command)))
            elif tool not in tools:
                tools.append(tool)
        if tools:
            requirements["tools"] = tools
        Site.objects.filter(pk=site.pk).update(requirements=requirements)
        kept = f"; kept as tools: {', '.join(tools)}" if tools else ""
        gone = "; ".join(repr(d) for d in dropped) or "none"
        reason = (
            f"pilot commands removed on upgrade (pilots run only named checks): dropped {gone}"
            f"{kept}"
        )
        SiteStatusChange.objects.create(
            site=site,
            old_status=site.status,
            new_status=site.status,
            reason=reason[:500],
            by="upgrade",
            at=timezone.now(),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("pilotchecker", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="site",
            name="contacts",
            field=models.ManyToManyField(
                blank=True,
                help_text="people who may read this site's pilot reports and logs (besides admins)",
                related_name="contact_for_sites",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(drop_free_text_commands, migrations.RunPython.noop),
    ]
