import time

from django.core.management.base import CommandError

from dmu import actions
from dss.management.base import ActionCommand

# Exit codes of --wait when the transfer did not succeed (as the dss command line's).
FINAL_EXIT = {"failed": 10, "partial": 11, "cancelled": 12}


class Command(ActionCommand):
    help = (
        "Copy a dataset (or some of its files) to a storage element, verified, by the Celery "
        "workers. With --wait, follow it and exit 0 (succeeded), 10 (failed), 11 (partial) "
        "or 12 (cancelled)."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name, scope.name")
        parser.add_argument("se", help="destination storage element")
        parser.add_argument("--files", nargs="+", help="only these files (logical names)")
        parser.add_argument("--source", help="copy only from replicas on this storage element")
        parser.add_argument("--wait", action="store_true", help="wait until the transfer ends")

    def run(self, dataset, se, files, source, wait, **options):
        transfer = actions.check_request_transfer(
            actions.get_dataset(dataset),
            actions.get_storage_element(se),
            lfns=files,
            source=actions.get_storage_element(source) if source else None,
        )
        self.stdout.write(f"transfer #{transfer.pk}: {dataset} → {se} queued")
        if not wait:
            return
        shown = None
        while not transfer.is_final:
            time.sleep(1)
            transfer = actions.transfers_with_totals().get(pk=transfer.pk)
            line = (
                f"{transfer.state}: {transfer.n_done} of {transfer.n_files} file(s), "
                f"{transfer.bytes_done or 0} of {transfer.progress_total} bytes"
            )
            if line != shown and options["verbosity"] > 0:
                self.stderr.write(line)
                shown = line
        outcome = f"transfer #{transfer.pk} {transfer.state}: {transfer.message}"
        if transfer.state in FINAL_EXIT:
            raise CommandError(outcome, returncode=FINAL_EXIT[transfer.state])
        self.stdout.write(outcome)
