"""Check the catalog against the storage elements and the TAG DB; --fix mends what it can."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from dmu import audit
from dss import leases
from dss.management.base import ActionCommand
from skims import actions as skim_actions
from tagdb import actions as tag_actions

LABELS = {
    "lost": "lost replicas (not on their storage element)",
    "damaged": "damaged replicas (size or adler32 differs from the catalog)",
    "orphan": "orphans (files in dataset folders that the catalog does not know)",
    "temporary": "temporaries of writes that did not finish",
    "stale": "stale TAG collections (their dataset changed since they were built)",
    "leftover": "leftovers of TAG builds that ended",
    "unreachable": "places that could not be read",
    "kept": "outputs kept for a retry (no repair needed)",
}


class Command(ActionCommand):
    help = (
        "Check that every replica is on its storage element with its size and adler32, that "
        "every file in a dataset folder is in the catalog, and that every TAG collection covers "
        "its dataset. Exits 1 on any disagreement; --fix removes orphans and temporaries, marks "
        "lost and damaged replicas, and drops what dead TAG builds left."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="mend what can be mended")
        parser.add_argument(
            "--full", action="store_true", help="checksum every replica (default: a sample)"
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=audit.DEFAULT_SAMPLE,
            help="replicas per storage element whose adler32 is checked (default %(default)s)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON document")

    def run(self, fix=False, full=False, sample=audit.DEFAULT_SAMPLE, json=False, **options):
        if sample < 0:
            raise CommandError("--sample must be 0 or more", returncode=2)
        folders, kept = skim_actions.output_folders()
        findings = audit.check_storage(
            full=full,
            sample=sample,
            fix=fix,
            folders=folders,
            kept=kept,
            live_tokens=leases.live_tokens(),
        )
        findings += tag_actions.check_collections(fix=fix)
        findings += skim_actions.check_scratch(fix=fix)
        problems = [f for f in findings if not f.benign]
        if json:
            self.stdout.write(
                _dumps({"findings": [f.as_dict() for f in findings], "ok": not problems})
            )
        else:
            self._print(findings, problems, fix)
        if problems:
            raise CommandError(
                f"{len(problems)} disagreement(s)" + (" found; see above" if not fix else " found"),
                returncode=1,
            )

    def _print(self, findings, problems, fix):
        for f in findings:
            note = " (fixed)" if f.fixed else ""
            self.stdout.write(f"{f.kind:<12} {f.where}: {f.message}{note}")
        counts = audit.summarise(findings)
        if not problems:
            kept = counts.get("kept", 0)
            extra = f"; {kept} output(s) kept for a retry" if kept else ""
            self.stdout.write(
                f"The catalog agrees with the storage elements and the TAG DB{extra}."
            )
            return
        self.stdout.write("")
        for kind, n in sorted(counts.items()):
            fixed = sum(1 for f in findings if f.kind == kind and f.fixed)
            done = f", {fixed} fixed" if fix and fixed else ""
            self.stdout.write(f"{n:6}  {LABELS.get(kind, kind)}{done}")


def _dumps(data) -> str:
    return json.dumps(data, indent=2)
