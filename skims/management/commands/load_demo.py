"""Set up the demo portal: a local storage element, the two demo datasets, one user per role."""

import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from dmu import actions
from dmu.storage import deterministic_path
from dss.management.base import ActionCommand
from dss.roles import ADMIN, OPERATOR, PHYSICIST
from pilotchecker import actions as pilot_actions
from skims import actions as skim_actions
from tagdb import actions as tag_actions

DEMO_DIR = Path(settings.BASE_DIR) / "data" / "demo"
DEMO_DATASETS = {
    "demo.hzz": (
        "uproot-HZZ.root",
        "Simulated H→ZZ→4ℓ events: muons, electrons, jets, photons, MET",
    ),
    "demo.zmumu": (
        "uproot-Zmumu.root",
        "Z→μμ events with run and event numbers and both muons' kinematics",
    ),
}
DEMO_PRESETS = {
    "muons and MET": (
        "The muon collection, its count and the missing transverse energy",
        ["NMuon", "Muon_*", "MET_*"],
    ),
    "dimuon (Z)": ("Run, event and both muons of the Z sample", ["Run", "Event", "*1", "*2", "M"]),
}
DEMO_USERS = [
    ("physicist", "physicist-demo", [PHYSICIST]),
    ("siteadmin", "siteadmin-demo", [ADMIN]),
    ("operator", "operator-demo", [OPERATOR]),
]


class Command(ActionCommand):
    help = "Load the demo data (idempotent) and print the demo users' credentials."

    def add_arguments(self, parser):
        parser.add_argument("--no-users", action="store_true", help="do not create demo users")

    def run(self, no_users=False, **options):
        root = Path(settings.DSS_STORAGE_ROOT)
        root.mkdir(parents=True, exist_ok=True)
        se = actions.do_add_storage_element(
            "LOCAL", root.resolve().as_uri(), "The portal's local disk", user_writable=True
        )
        for name, (filename, description) in DEMO_DATASETS.items():
            rel = deterministic_path(name.split(".")[0], filename)
            target = root / rel
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(DEMO_DIR / filename, target)
            dataset, added = actions.check_register_dataset(
                name, se, [rel], description=description
            )
            self.stdout.write(f"dataset {dataset.name}: {added} new file(s)")
        tag_actions.check_build_builtin(list(DEMO_DATASETS), self.stdout.write)
        for preset, (description, patterns) in DEMO_PRESETS.items():
            skim_actions.do_ensure_branch_preset(preset, description, patterns)
            self.stdout.write(f"branch preset {preset!r}: {', '.join(patterns)}")
        site = pilot_actions.do_ensure_demo_site()
        self.stdout.write(f"site {site.name}: {site.batch_system} batch system, {site.status}")
        if no_users:
            return
        User = get_user_model()
        self.stdout.write("\nDemo users (user name / password / role):")
        for username, password, roles in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.save()
            user.groups.add(*Group.objects.filter(name__in=roles))
            self.stdout.write(f"  {username:<10} {password:<16} {', '.join(roles)}")
