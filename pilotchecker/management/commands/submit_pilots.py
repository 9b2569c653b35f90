import time

from django.core.management.base import CommandError
from django.db import transaction

from dss.management.base import ActionCommand
from pilotchecker import actions
from pilotchecker.models import Pilot


class Command(ActionCommand):
    help = "Send pilots to a site (a Celery worker submits them); --wait prints their verdicts."

    def add_arguments(self, parser):
        parser.add_argument("site", help="site name")
        parser.add_argument("-n", type=int, default=1, help="number of pilots (default 1)")
        parser.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            default=0,
            help="wait up to this long for the pilots to end, print each outcome, and exit 1 "
            "unless every pilot passed",
        )

    def run(self, site, n, wait, **options):
        target = actions.get_site(site)
        with transaction.atomic():
            pilots = actions.do_submit_pilots(target, n)
        for p in pilots:
            self.stdout.write(f"pilot #{p.pk} submitted to {target.name}: {p.get_absolute_url()}")
        if wait <= 0:
            return
        ids = [p.pk for p in pilots]
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if all(p.is_final for p in Pilot.objects.filter(pk__in=ids)):
                break
            time.sleep(1)
        bad = 0
        for p in Pilot.objects.filter(pk__in=ids).order_by("pk"):
            if not p.is_final:
                self.stdout.write(f"pilot #{p.pk}: still {p.state} after {wait:g} s")
            elif p.state == "reported":
                self.stdout.write(f"pilot #{p.pk}: {p.message}")
            else:
                self.stdout.write(f"pilot #{p.pk}: {p.get_state_display()}: {p.message}")
            bad += p.outcome != "passed"
        if bad:
            # Scripts and cron jobs read the exit code: 1 unless every pilot passed.
            raise CommandError(f"{bad} of {len(ids)} pilot(s) did not pass", returncode=1)
