from dmu import actions
from dss.management.base import ActionCommand


class Command(ActionCommand):
    help = "Add a storage element (file:///path, root://host:port//path or https://…)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("url")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--user-writable",
            action="store_true",
            help="physicists may write their own datasets (user.<name>.*) here",
        )

    def run(self, name, url, description, user_writable, **options):
        se = actions.do_add_storage_element(name, url, description, user_writable=user_writable)
        self.stdout.write(f"{se.name}: {se.url}" + (" (open to users)" if user_writable else ""))
