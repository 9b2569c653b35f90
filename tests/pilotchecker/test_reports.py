"""A pilot's report arrives once, with its own token; anything else is refused and not stored."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from pilotchecker.models import Pilot
from tests.pilotchecker.conftest import a_report, body, send, token_of

pytestmark = pytest.mark.django_db


def post(pilot_id: int, data: bytes, token: str | None, scheme: str = "Pilot"):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"} if token is not None else {}
    return APIClient().post(
        f"/api/pilots/{pilot_id}/report/", data, content_type="application/json", **headers
    )


def assert_nothing_stored(pilot: Pilot) -> None:
    pilot.refresh_from_db()
    assert pilot.report is None and pilot.verdict == "" and pilot.token_used_at is None
    assert pilot.state == "queued"


def test_it_accepts_a_report_with_the_pilots_token(fake_batch, site):
    (p,) = send(site)

    r = post(p.pk, body(a_report("warning")), token_of(p))

    assert r.status_code == 201, r.json()
    assert r.json() == {"status": "received", "pilot": p.pk, "verdict": "warning"}
    p.refresh_from_db()
    assert (p.state, p.verdict, p.report_source) == ("reported", "warning", "post")
    assert p.report["facts"]["host"]["hostname"] == "wn042"
    assert "memory_unknown" not in p.message and "memory for this job: unknown" in p.message
    assert p.token_used_at is not None and p.finished_at is not None
    assert [e.kind for e in p.events.all()][-1] == "reported"


def test_the_portal_judges_the_checks_not_the_verdict_field(fake_batch, site):
    (p,) = send(site)
    report = a_report("failed") | {"verdict": "passed"}

    post(p.pk, body(report), token_of(p))

    p.refresh_from_db()
    assert p.verdict == "failed"


def test_it_refuses_a_wrong_token(fake_batch, site):
    (p,) = send(site)

    r = post(p.pk, body(a_report()), "not-the-token")

    assert r.status_code == 403
    assert r.json()["error"] == "report_refused"
    assert_nothing_stored(p)


def test_it_refuses_a_missing_token_or_another_scheme(fake_batch, site):
    (p,) = send(site)

    assert post(p.pk, body(a_report()), None).status_code == 403
    assert post(p.pk, body(a_report()), token_of(p), scheme="Token").status_code == 403
    assert_nothing_stored(p)


def test_it_refuses_another_pilots_token(fake_batch, site):
    a, b = send(site, 2)

    assert post(a.pk, body(a_report()), token_of(b)).status_code == 403
    assert post(987654, body(a_report()), token_of(b)).status_code == 403
    assert_nothing_stored(a)


def test_it_refuses_an_expired_token(fake_batch, site):
    (p,) = send(site)
    Pilot.objects.filter(pk=p.pk).update(token_expires_at=timezone.now() - timedelta(seconds=1))

    r = post(p.pk, body(a_report()), token_of(p))

    assert r.status_code == 403 and "expired" in r.json()["detail"]
    assert_nothing_stored(p)


def test_it_refuses_a_reused_token(fake_batch, site):
    (p,) = send(site)
    token = token_of(p)
    assert post(p.pk, body(a_report("passed")), token).status_code == 201

    r = post(p.pk, body(a_report("failed")), token)

    assert r.status_code == 403 and "already used" in r.json()["detail"]
    p.refresh_from_db()
    assert p.verdict == "passed" and p.report["checks"][-1]["name"] == "cores"
    assert p.events.filter(kind="reported").count() == 1


def test_it_refuses_a_report_for_a_cancelled_pilot(fake_batch, site, siteadmin):
    from pilotchecker import actions

    (p,) = send(site)
    actions.do_cancel_pilot(p, user=siteadmin)

    r = post(p.pk, body(a_report()), token_of(p))

    assert r.status_code == 403
    p.refresh_from_db()
    assert p.state == "cancelled" and p.report is None


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b'{"checks": [', "line 1 column 13"),
        (b"\xff\xfe", "byte 0"),
        (b"[1, 2]", "body"),
        (b'{"facts": {}}', "checks"),
        (b'{"checks": []}', "checks"),
        (b'{"checks": [{"name": "cores", "status": "fine"}]}', "checks[0].status"),
        (b'{"checks": [{"status": "pass"}]}', "checks[0]"),
        (b'{"checks": [{"name": "cores", "status": "pass"}], "facts": []}', "facts"),
    ],
)
def test_it_refuses_a_malformed_report_naming_where(fake_batch, site, data, where):
    (p,) = send(site)

    r = post(p.pk, data, token_of(p))

    assert r.status_code == 400
    assert r.json()["where"] == where
    assert_nothing_stored(p)
    # the token was not spent: the real report can still come
    assert post(p.pk, body(a_report()), token_of(p)).status_code == 201


def test_it_refuses_an_oversized_report(fake_batch, site, settings):
    settings.PILOT_REPORT_MAX_BYTES = 4096
    (p,) = send(site)
    report = a_report() | {"padding": "x" * 5000}

    r = post(p.pk, body(report), token_of(p))

    assert r.status_code == 400
    assert "at most 4096" in r.json()["detail"]
    assert_nothing_stored(p)


def test_the_token_is_stored_only_as_a_hash(fake_batch, site):
    (p,) = send(site)
    token = token_of(p)

    assert len(token) >= 40
    assert token not in p.token_hash and len(p.token_hash) == 64
    assert p.token_expires_at == p.created_at + timedelta(minutes=site.pilot_timeout_minutes)


def test_ping_answers_anyone_with_the_time():
    r = APIClient().get("/api/ping/", HTTP_AUTHORIZATION="Pilot whatever")

    assert r.status_code == 200
    assert r.json()["service"] == "dss" and "T" in r.json()["time"]


def report_text(**extra_fact) -> str:
    """A valid report's JSON with ``facts.extra`` set to the given raw JSON text."""
    text = body(a_report()).decode()
    ((key, raw),) = extra_fact.items()
    return text.replace('"facts": {', f'"facts": {{"{key}": {raw}, ', 1)


HOSTILE = {
    "nul": report_text(note='"a\\u0000b"'),
    "nul_in_a_key": report_text(note='{"a\\u0000": 1}'),
    "lone_surrogate": report_text(note='"\\ud800"'),
    "nan": report_text(note="NaN"),
    "infinity": report_text(note="-Infinity"),
    "huge_float": report_text(note="1e999"),
    "huge_integer": report_text(note="1" * 5000),
    "deep": report_text(note="[" * 5000 + "]" * 5000),
    "deep_but_parsable": report_text(note="[" * 40 + "]" * 40),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_it_refuses_text_and_numbers_a_database_cannot_hold(fake_batch, site, case):
    (p,) = send(site)

    r = post(p.pk, HOSTILE[case].encode(), token_of(p))

    assert r.status_code == 400, r.content
    assert r.json()["error"] == "invalid" and r.json()["detail"] and r.json()["where"]
    assert_nothing_stored(p)
    # the token still works for a good report
    assert post(p.pk, body(a_report()), token_of(p)).status_code == 201


def test_a_surrogate_pair_is_a_character_and_is_accepted(fake_batch, site):
    (p,) = send(site)

    r = post(p.pk, report_text(note='"\\ud83d\\ude00"').encode(), token_of(p))

    assert r.status_code == 201
    p.refresh_from_db()
    assert p.report["facts"]["note"] == "\U0001f600"


def test_the_poller_keeps_a_report_whose_output_holds_a_nul_written_out(fake_batch, site):
    from pilotchecker import actions, pilot

    (p,) = send(site)
    report = a_report()
    report["checks"] = [
        *report["checks"],
        {"name": "commands", "status": "pass", "code": "ok", "message": "x exited with 0",
         "value": {"output": ["a\x00b", "\udcff"]}, "threshold": "x"},
    ]  # fmt: skip
    # The pilot's post was refused; the job printed the report and raw NULs on its logs.
    fake_batch.end(
        p.batch_job_id,
        stdout="noise\x00\n" + pilot.format_report(report).replace("1.0.0", "1.0.0\\u0000"),
        stderr="dss-pilot: the portal refused the report\x00\n",
    )

    actions.do_poll_pilots()

    p.refresh_from_db()
    assert (p.state, p.report_source, p.verdict) == ("reported", "output file", "passed")
    assert p.report["pilot_version"] == "1.0.0\\u0000"
    assert p.report["checks"][-1]["value"]["output"] == ["a\\u0000b", "\\udcff"]
    assert "noise\\x00" in p.stdout_tail and "\x00" not in p.stderr_tail


def test_one_pilot_that_cannot_be_recorded_does_not_stop_the_others(fake_batch, site):
    from pilotchecker import actions

    first, second = send(site, 2)
    # a log file replaced by a link to a file the portal must never show
    fake_batch.end(first.batch_job_id, stdout="", stderr="")
    out, _ = fake_batch.output_paths(first.batch_job_id, first.workdir)
    out.unlink()
    out.symlink_to("/etc/passwd")
    fake_batch.end(second.batch_job_id, stdout="", stderr="boom\n")

    actions.do_poll_pilots()

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == second.state == "failed"
    assert "root:" not in first.stdout_tail
    assert second.stderr_tail == "boom\n"
