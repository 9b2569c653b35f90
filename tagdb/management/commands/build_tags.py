"""Build a dataset's TAG collection in this process (no worker needed)."""

from dmu.actions import get_dataset
from dss.management.base import ActionCommand
from tagdb import actions


class Command(ActionCommand):
    help = "Build (or rebuild) a dataset's TAGs now, with the fitting schema or the one named."

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name, e.g. demo.hzz")
        parser.add_argument("--schema", help="TAG schema name (default: the one that fits)")

    def run(self, dataset, schema=None, **options):
        ds = get_dataset(dataset)
        row = actions.get_schema(schema) if schema else actions.schema_for_dataset(ds)
        collection = actions.get_or_create_collection(ds, row)
        build = actions.check_build_now(collection)
        self.stdout.write(f"{collection}: {build.message}")
