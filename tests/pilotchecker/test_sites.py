"""Sites: a configuration the batch system or the pilot cannot use is never saved, whichever
way it comes (action, model, admin, web form, API), and the error names the field."""

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from dss.errors import Conflict, InvalidInput
from pilotchecker import actions
from pilotchecker.models import Site

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_an_admin_adds_a_slurm_site(siteadmin):
    site = actions.do_add_site(
        "UKI-SLURM",
        "slurm",
        submit_params={"partition": "debug", "time_limit": "00:20:00", "extra": ["--mem=2G"]},
        requirements={
            "min_cores": 2,
            "cvmfs_repos": ["atlas.cern.ch"],
            "tools": ["gcc"],
        },
        pilot_interval_minutes=30,
        user=siteadmin,
    )

    assert site.status == "test" and not site.can_take_skims
    assert site.pilot_config()["min_cores"] == 2 and site.pilot_config()["python_min"] == "3.6"
    (change,) = site.status_changes.all()
    assert (change.new_status, change.by, change.reason) == ("test", "admin1", "site added")


@pytest.mark.parametrize(
    ("batch_system", "params", "requirements", "where"),
    [
        ("condor", {}, {}, "batch_system"),
        ("local", {"partition": "debug"}, {}, "partition"),
        ("slurm", {"partition": "debug; rm -rf /"}, {}, "partition"),
        ("slurm", {"extra": ["--uid=0"]}, {}, "extra"),
        ("slurm", {"time_limit": "1h"}, {}, "time_limit"),
        ("slurm", {"args": ["--dry-run"]}, {}, "args"),
        ("slurm", ["debug"], {}, "submit_params"),
        ("local", {}, {"min_cpus": 4}, "min_cpus"),
        ("local", {}, {"min_cores": "4"}, "min_cores"),
        ("local", {}, {"min_cores": 2.5}, "min_cores"),
        ("local", {}, {"min_memory_mb": -1}, "min_memory_mb"),
        ("local", {}, {"require_credential": "yes"}, "require_credential"),
        ("local", {}, {"python_min": "three"}, "python_min"),
        ("local", {}, {"cvmfs_repos": ["../etc"]}, "cvmfs_repos"),
        ("local", {}, {"cvmfs_repos": "atlas.cern.ch"}, "cvmfs_repos"),
        ("local", {}, {"tools": ["echo 'unclosed"]}, "tools"),
        ("local", {}, {"commands": ["uname -r"]}, "commands"),
        ("local", {}, {"allowed_commands": ["sh"]}, "allowed_commands"),
        ("local", {}, {"reach": ["NO-SUCH-SE"]}, "reach"),
        ("local", {}, {"report_url": "http://elsewhere/"}, "report_url"),
        ("local", {}, ["min_cores"], "requirements"),
    ],
)
def test_an_invalid_configuration_is_refused_naming_the_field(
    batch_system, params, requirements, where
):
    with pytest.raises(InvalidInput) as err:
        actions.do_add_site("BAD", batch_system, submit_params=params, requirements=requirements)

    assert err.value.where == where
    assert not Site.objects.exists()


@pytest.mark.parametrize("name", ["", "a b", "../x", "-lead", "x" * 65, "new"])
def test_a_bad_site_name_is_refused(name):
    with pytest.raises(InvalidInput) as err:
        actions.do_add_site(name, "local")
    assert err.value.where == "name"


def test_the_model_itself_refuses_to_save_an_invalid_configuration(db):
    site = Site(name="RAW", batch_system="local", requirements={"min_cores": "many"})

    with pytest.raises(InvalidInput):
        site.save()
    with pytest.raises(ValidationError) as err:
        site.full_clean()

    assert "min_cores: must be an integer" in err.value.message_dict["requirements"][0]
    assert not Site.objects.exists()


def test_the_same_name_twice_is_a_conflict(site):
    with pytest.raises(Conflict):
        actions.do_add_site(site.name, "local")


def test_an_invalid_update_changes_nothing(site):
    with pytest.raises(InvalidInput) as err:
        actions.check_update_site(site, requirements={"min_cores": -2}, pilot_timeout_minutes=5)

    assert err.value.where == "min_cores"
    site.refresh_from_db()
    assert site.requirements == {"min_cores": 1} and site.pilot_timeout_minutes == 30
    with pytest.raises(InvalidInput) as err:
        actions.check_update_site(site, status="online")
    assert err.value.where == "status"


def test_the_admin_shows_an_invalid_configuration_on_its_field(admin_client):
    r = admin_client.post(
        "/admin/pilotchecker/site/add/",
        {
            "name": "ADM",
            "description": "",
            "batch_system": "slurm",
            "submit_params": '{"extra": ["--output=/etc/passwd"]}',
            "requirements": "{}",
            "pilot_timeout_minutes": "30",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "status_changes-TOTAL_FORMS": "0",
            "status_changes-INITIAL_FORMS": "0",
        },
    )

    assert r.status_code == 200
    assert "--output is not allowed" in r.content.decode()
    assert not Site.objects.exists()


def test_the_site_form_adds_a_site(siteadmin):
    c = logged_in(siteadmin)
    assert c.get("/sites/new/").status_code == 200

    r = c.post(
        "/sites/new/",
        {
            "name": "UKI-FORM",
            "batch_system": "slurm",
            "partition": "debug",
            "time_limit": "00:15:00",
            "extra": "--mem=1G\n--qos=short\n",
            "env": "ATLAS_LOCAL_ROOT=/cvmfs/atlas.cern.ch\n",
            "min_cores": "2",
            "min_work_disk_gb": "5",
            "cvmfs_repos": "atlas.cern.ch\nsft.cern.ch",
            "tools": "gcc",
            "pilot_timeout_minutes": "20",
        },
    )

    assert r.status_code == 302 and r.url == "/sites/UKI-FORM/"
    site = Site.objects.get(name="UKI-FORM")
    assert site.submit_params == {
        "partition": "debug",
        "time_limit": "00:15:00",
        "extra": ["--mem=1G", "--qos=short"],
        "env": {"ATLAS_LOCAL_ROOT": "/cvmfs/atlas.cern.ch"},
    }
    assert site.requirements == {
        "min_cores": 2,
        "min_work_disk_gb": 5,
        "cvmfs_repos": ["atlas.cern.ch", "sft.cern.ch"],
        "tools": ["gcc"],
    }


def test_the_site_form_shows_each_error_on_its_field(siteadmin):
    r = logged_in(siteadmin).post(
        "/sites/new/",
        {
            "name": "UKI-FORM",
            "batch_system": "local",
            "partition": "debug",
            "tools": "echo 'unclosed",
            "pilot_timeout_minutes": "20",
        },
    )

    html = r.content.decode()
    assert r.status_code == 200 and not Site.objects.exists()
    partition = html.index("not a parameter of the local batch system")
    assert html.index('id="id_partition"') < partition < html.index('id="id_account"')
    tools = html.index("not a tool name")
    assert html.index('id="id_tools"') < tools < html.index('id="id_allowed_commands"')
    assert html.count('class="field has-error"') == 2


def test_the_edit_form_keeps_settings_it_does_not_show(site, siteadmin):
    actions.check_update_site(
        site,
        submit_params={"job_name": "atlas-pilot"},
        requirements={"min_cores": 1, "timeout_s": 60},
    )
    c = logged_in(siteadmin)
    html = c.get(f"/sites/{site.name}/edit/").content.decode()
    assert 'value="1"' in html and "disabled" in html

    r = c.post(
        f"/sites/{site.name}/edit/",
        {
            "name": "IGNORED",
            "batch_system": "local",
            "min_cores": "4",
            "pilot_timeout_minutes": "45",
        },
    )

    assert r.status_code == 302
    site.refresh_from_db()
    assert site.name == "UKI-TEST"
    assert site.submit_params == {"job_name": "atlas-pilot"}
    assert site.requirements == {"min_cores": 4, "timeout_s": 60}
    assert site.pilot_timeout_minutes == 45 and site.pilot_interval_minutes is None


def test_load_demo_adds_the_local_demo_site_once(db):
    first = actions.do_ensure_demo_site()
    again = actions.do_ensure_demo_site()

    assert first == again and first.batch_system == "local" and first.status == "online"
