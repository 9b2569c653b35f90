"""Record the TAG schemas shipped in tagdb/schemas/ in the portal DB."""

from dss.errors import Conflict
from dss.management.base import ActionCommand
from tagdb import actions


class Command(ActionCommand):
    help = "Record the builtin TAG schemas (tagdb/schemas/*.yaml) at the versions they name."

    def run(self, **options):
        rows, problems = actions.sync_builtin_schemas()
        for row in rows:
            self.stdout.write(f"{row}: {len(row.load().attributes)} attributes")
        if problems:
            raise Conflict("; ".join(problems), where="tagdb/schemas")
