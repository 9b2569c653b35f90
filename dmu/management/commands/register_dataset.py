from dmu import actions
from dss.management.base import ActionCommand


class Command(ActionCommand):
    help = "Register ROOT files on a storage element as (part of) a dataset."

    def add_arguments(self, parser):
        parser.add_argument("name", help="dataset name, scope.name")
        parser.add_argument(
            "files",
            nargs="+",
            help="paths on the storage element (relative, or absolute inside a local SE)",
        )
        parser.add_argument("--se", required=True, help="storage element name")
        parser.add_argument("--tree", default=None, help="event tree name (default: events)")
        parser.add_argument("--description", default="")

    def run(self, name, files, se, tree, description, **options):
        storage = actions.get_storage_element(se)

        def progress(done, total):
            if options["verbosity"] > 1:
                self.stderr.write(f"read {done}/{total}")

        dataset, added = actions.check_register_dataset(
            name, storage, files, tree=tree, description=description, progress=progress
        )
        total = dataset.files.count()
        self.stdout.write(f"{dataset.name}: {added} new file(s), {total} in all")
