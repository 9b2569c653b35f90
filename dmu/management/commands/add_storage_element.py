from dmu import actions
from dss.management.base import ActionCommand


class Command(ActionCommand):
    help = "Add a storage element (file:///path, root://host:port//path or https://…)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("url")
        parser.add_argument("--description", default="")

    def run(self, name, url, description, **options):
        se = actions.do_add_storage_element(name, url, description)
        self.stdout.write(f"{se.name}: {se.url}")
