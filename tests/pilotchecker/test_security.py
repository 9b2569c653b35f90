"""What a hostile site admin or a curious physicist could get out of pilots: a site names
checks, never shell text; only the deployment's allow-list says what runs; a pilot's report
and logs are read by admins and the site's contacts, everyone else sees its state."""

import json
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.test import APIClient

from dmu import actions as dmu_actions
from dss.errors import InvalidInput
from pilotchecker import actions, tasks
from pilotchecker.models import SiteStatusChange
from tests.conftest import make_user
from tests.pilotchecker.conftest import a_report, body, send, token_of

pytestmark = pytest.mark.django_db


def page(user, url: str) -> str:
    c = Client()
    c.force_login(user)
    r = c.get(url)
    assert r.status_code == 200
    return r.content.decode()


def api(user) -> APIClient:
    c = APIClient()
    c.force_authenticate(user)
    return c


@pytest.fixture
def reported(fake_batch, site, siteadmin):
    """A pilot that reported, with output logs, on a site whose contact is ``phys2``."""
    contact = make_user("phys2", ["physicist"])
    actions.check_update_site(site, contacts=["phys2"])
    (p,) = send(site, user=siteadmin)
    actions.check_receive_report(p.pk, token_of(p), body(a_report("failed")))
    fake_batch.end(p.batch_job_id, stdout="the pilot's own output\n", stderr="its error log\n")
    actions.do_poll_pilots()
    p.refresh_from_db()
    return p, contact


def test_a_physicist_sees_a_pilots_state_but_not_its_report_or_logs(reported, physicist):
    p, _ = reported

    body_ = api(physicist).get(f"/api/pilots/{p.pk}/").json()
    html = page(physicist, f"/pilots/{p.pk}/")

    assert (body_["state"], body_["verdict"], body_["output_visible"]) == (
        "reported",
        "failed",
        False,
    )
    assert body_["report"] is None and body_["stdout_tail"] is None
    assert body_["stderr_tail"] is None
    assert "wn042" not in json.dumps(body_) and "its error log" not in json.dumps(body_)
    assert 'id="output-withheld"' in html and "phys2" in html
    for hidden in ("wn042", "its error log", "the pilot's own output", 'id="checks-h"'):
        assert hidden not in html


@pytest.mark.parametrize("who", ["contact", "admin"])
def test_the_sites_contacts_and_admins_read_the_report_and_logs(reported, siteadmin, who):
    p, contact = reported
    user = contact if who == "contact" else siteadmin

    body_ = api(user).get(f"/api/pilots/{p.pk}/").json()
    html = page(user, f"/pilots/{p.pk}/")

    assert body_["output_visible"] is True
    assert body_["report"]["facts"]["host"]["hostname"] == "wn042"
    assert body_["stderr_tail"] == "its error log\n"
    assert "wn042" in html and "its error log" in html and 'id="output-withheld"' not in html


def test_contacts_are_set_by_user_name_and_an_unknown_one_is_refused(site, siteadmin):
    make_user("phys2", ["physicist"])
    c = api(siteadmin)

    r = c.patch(f"/api/sites/{site.name}/", {"contacts": ["phys2"]}, format="json")
    assert r.status_code == 200 and r.json()["contacts"] == ["phys2"]
    r = c.patch(f"/api/sites/{site.name}/", {"contacts": ["phys2", "ghost"]}, format="json")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid", "detail": "no user named 'ghost'", "where": "contacts"}
    assert list(site.contacts.values_list("username", flat=True)) == ["phys2"]


def test_the_site_form_sets_contacts(site, siteadmin):
    make_user("phys2", ["physicist"])
    c = Client()
    c.force_login(siteadmin)
    form = c.get(f"/sites/{site.name}/edit/").context["form"]
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(contacts="phys2\n", requirements="")

    r = c.post(f"/sites/{site.name}/edit/", data)

    assert r.status_code == 302, r.context["form"].errors
    assert list(site.contacts.values_list("username", flat=True)) == ["phys2"]


def test_a_site_asks_for_allow_listed_commands_by_name_and_the_pilot_gets_their_argv(
    fake_batch, site, settings
):
    settings.DSS_PILOT_COMMANDS = {"gcc": ["gcc", "--version"]}
    actions.check_update_site(site, requirements={"allowed_commands": ["gcc"]})

    (p,) = send(site)

    config = json.loads((Path(p.workdir) / "pilot.json").read_text())
    assert config["commands"] == {"gcc": ["gcc", "--version"]}
    assert "allowed_commands" not in config
    assert p.requirements["allowed_commands"] == ["gcc"]


def test_a_command_the_deployment_no_longer_allows_fails_the_pilot_unsent(
    fake_batch, site, settings
):
    settings.DSS_PILOT_COMMANDS = {"gcc": ["gcc", "--version"]}
    actions.check_update_site(site, requirements={"allowed_commands": ["gcc"]})
    (queued,) = actions.do_submit_pilots(site, 1)
    settings.DSS_PILOT_COMMANDS = {}

    tasks.submit_pilot(queued.pk)
    queued.refresh_from_db()

    assert queued.state == "failed" and not fake_batch.jobs
    assert "'gcc' is not a command of this portal's allow-list" in queued.message
    with pytest.raises(InvalidInput, match="allow-list") as err:
        actions.do_submit_pilots(site, 1)
    assert err.value.where == "allowed_commands"


@pytest.mark.parametrize(
    "requirements",
    [
        {"commands": ["sh -c \"tr '\\0' '\\n' < /proc/1/environ\""]},
        {"commands": {"env": ["sh", "-c", "env"]}},
        {"allowed_commands": ["sh -c env"]},
        {"tools": ["sh -c env"]},
    ],
)
def test_shell_text_from_a_site_is_refused_and_nothing_is_saved(site, siteadmin, requirements):
    r = api(siteadmin).patch(
        f"/api/sites/{site.name}/", {"requirements": requirements}, format="json"
    )

    assert r.status_code == 400
    assert r.json()["where"] in ("commands", "allowed_commands", "tools")
    site.refresh_from_db()
    assert site.requirements == {"min_cores": 1}


def test_a_site_reaches_a_storage_element_by_name(fake_batch, site, tmp_path):
    dmu_actions.do_add_storage_element("XRD", "root://xrd.example.org:1095//data", "")
    dmu_actions.do_add_storage_element("WEB", "https://web.example.org/dss", "")
    dmu_actions.do_add_storage_element("DISK", tmp_path.as_uri(), "")
    actions.check_update_site(site, requirements={"reach": ["XRD", "WEB"]})

    (p,) = send(site)

    config = json.loads((Path(p.workdir) / "pilot.json").read_text())
    assert config["reach"] == [
        {"name": "XRD", "host": "xrd.example.org", "port": 1095},
        {"name": "WEB", "host": "web.example.org", "port": 443},
    ]
    with pytest.raises(InvalidInput, match="not reached over the network"):
        actions.check_update_site(site, requirements={"reach": ["DISK"]})


def test_the_upgrade_maps_plain_tool_commands_and_drops_the_rest_with_a_note(site):
    import importlib

    from django.apps import apps
    from django.db import connection

    from pilotchecker.models import Site

    migration = importlib.import_module(
        "pilotchecker.migrations.0002_site_contacts_and_named_checks"
    )
    # A site as the previous version stored it (its own save would refuse the old key).
    Site.objects.filter(pk=site.pk).update(
        requirements={
            "min_cores": 1,
            "commands": ["gcc --version", "xrdcp", "uname -r", "sh -c 'id'"],
        }
    )

    migration.drop_free_text_commands(apps, connection.schema_editor())

    site.refresh_from_db()
    assert site.requirements == {"min_cores": 1, "tools": ["gcc", "xrdcp"]}
    note = SiteStatusChange.objects.filter(site=site, by="upgrade").get()
    assert "'uname -r'" in note.reason and "\"sh -c 'id'\"" in note.reason
    assert note.old_status == note.new_status == site.status
    site.check_configuration()  # the site is usable as it is now
