"""The pilot script, run as the batch job runs it: a subprocess with a JSON config, reporting
to a small HTTP server that stands in for the portal and records what arrives."""

from __future__ import annotations

import ast
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pilotchecker import pilot

PILOT = Path(pilot.__file__).resolve()
TOKEN = "pilot-secret-42"
PY36 = Path("/root/.pyenv/versions/3.6.15/bin/python")


class PortalRecorder:
    """An HTTP server on 127.0.0.1 that records every request and answers from a script.

    ``answers`` is a list of status codes for successive POSTs (the last one repeats);
    GET answers 200 with the JSON ``{"pong": true}`` (and, like any answer, a Date header).
    """

    def __init__(self, answers: list[int] | None = None):
        self.answers = list(answers or [201])
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - the http.server API
                recorder.requests.append(
                    {"method": "GET", "path": self.path, "headers": dict(self.headers)}
                )
                self._answer(200, {"pong": True})

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append(
                    {
                        "method": "POST",
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                posts = len(recorder.posts)
                status = recorder.answers[min(posts, len(recorder.answers)) - 1]
                self._answer(
                    status, {"status": "received"} if status < 300 else {"error": "refused"}
                )

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def posts(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST"]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def config(self, **overrides) -> dict:
        """A config that reports here and asks for nothing a test machine lacks."""
        config = {
            "report_url": self.url("/api/pilots/report"),
            "ping_url": self.url("/api/ping"),
            "token": TOKEN,
            "min_cores": 1,
            "min_memory_mb": 1,
            "min_work_disk_gb": 0.01,
            "min_tmp_disk_gb": 0.01,
            "report_tries": 3,
            "report_backoff_s": 0.1,
            "timeout_s": 10,
        }
        config.update(overrides)
        return config

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def portal():
    with PortalRecorder() as recorder:
        yield recorder


def run_pilot(config: dict, workdir: Path, *args: str, python: str = sys.executable, env=None):
    """Run pilot.py with ``config`` in a file; (process, report printed on stdout)."""
    config_path = workdir / "pilot.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.run(
        [python, str(PILOT), "--config", str(config_path), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return proc, pilot.extract_report(proc.stdout)


def by_name(report: dict, name: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"] == name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_jwt(claims: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


# ---------------------------------------------------------------- reporting


def test_it_reports_a_passing_node_with_its_token(portal, tmp_path):
    proc, report = run_pilot(portal.config(), tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert report["verdict"] == "passed", [c for c in report["checks"] if c["status"] != "pass"]
    assert len(portal.posts) == 1
    post = portal.posts[0]
    assert post["path"] == "/api/pilots/report"
    assert post["headers"]["Authorization"] == f"Pilot {TOKEN}"
    assert post["headers"]["Content-Type"] == "application/json"
    assert json.loads(post["body"]) == report
    assert TOKEN not in proc.stdout
    assert set(report) == {
        "pilot_version",
        "started_at",
        "finished_at",
        "facts",
        "checks",
        "verdict",
    }
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "python_version",
        "cores",
        "memory",
        "work_disk",
        "tmp_disk",
        "credential_lifetime",
        "cvmfs",
        "paths",
        "tools",
        "commands",
        "reach",
        "portal_access",
    ]
    for item in report["checks"]:
        assert set(item) == {"name", "code", "status", "message", "value", "threshold"}
        assert item["code"] == "ok"


def test_the_report_carries_the_node_facts(portal, tmp_path):
    proc, report = run_pilot(portal.config(), tmp_path)

    facts = report["facts"]
    assert facts["host"]["hostname"] == socket.gethostname()
    assert facts["python"]["executable"] == sys.executable
    assert facts["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["cpu"]["logical_cores"] == os.cpu_count()
    assert facts["cpu"]["arch"] == os.uname().machine
    if os.uname().machine == "x86_64":
        assert facts["cpu"]["arch_level"] in {"x86_64-v1", "x86_64-v2", "x86_64-v3", "x86_64-v4"}
    assert facts["memory"]["total_mb"] > 0
    assert facts["disk"]["work"]["path"] == str(tmp_path)
    assert facts["disk"]["work"]["free_gb"] > 0
    assert facts["batch"]["system"] in {"none", "slurm", "local", "htcondor", "pbs", "lsf", "sge"}
    # the portal's Date header has one-second resolution
    assert abs(facts["clock"]["offset_s"]) <= 2
    assert facts["portal"]["http_status"] == 200
    gets = [r for r in portal.requests if r["method"] == "GET"]
    assert [g["path"] for g in gets] == ["/api/ping"]


def test_thresholds_it_cannot_meet_fail_with_their_codes(portal, tmp_path):
    config = portal.config(
        min_cores=10000,
        min_memory_mb=10**9,
        min_work_disk_gb=10**6,
        min_tmp_disk_gb=10**6,
        python_min="99.0",
    )
    proc, report = run_pilot(config, tmp_path)

    # the report was delivered, so the pilot did its job: exit 0 although the node failed
    assert proc.returncode == 0, proc.stderr
    assert report["verdict"] == "failed"
    codes = {c["name"]: (c["status"], c["code"]) for c in report["checks"]}
    assert codes["cores"] == ("fail", "cores_too_few")
    assert codes["memory"] == ("fail", "memory_too_low")
    assert codes["work_disk"] == ("fail", "disk_too_small")
    assert codes["tmp_disk"] == ("fail", "disk_too_small")
    assert codes["python_version"] == ("fail", "python_too_old")
    cores = by_name(report, "cores")[0]
    assert cores["threshold"] == 10000
    assert 1 <= cores["value"] <= os.cpu_count()
    assert "10000" in cores["message"]
    assert json.loads(portal.posts[0]["body"])["verdict"] == "failed"


def test_it_checks_paths_commands_and_cvmfs_one_by_one(portal, tmp_path):
    (tmp_path / "present.txt").write_text("x")
    config = portal.config(
        paths=[str(tmp_path / "present.txt"), "$DSS_TEST_DIR", "/no/such/dss/path"],
        # argv lists from a deployment's allow-list, run in name order
        commands={
            "a-true": ["true"],
            "b-prints": ["sh", "-c", "echo first line; echo second; exit 3"],
            "c-missing": ["no-such-dss-command"],
            "d-sleeps": ["sleep", "30"],
        },
        cvmfs_repos=["dss-test.example.org"],
        timeout_s=1,
    )
    env = dict(os.environ, DSS_TEST_DIR=str(tmp_path))
    started = time.monotonic()
    proc, report = run_pilot(config, tmp_path, env=env)

    assert time.monotonic() - started < 20, "the sleeping command was not cut off"
    assert report["verdict"] == "failed"
    paths = by_name(report, "paths")
    assert [(p["threshold"], p["status"], p["code"]) for p in paths] == [
        (str(tmp_path / "present.txt"), "pass", "ok"),
        ("$DSS_TEST_DIR", "pass", "ok"),
        ("/no/such/dss/path", "fail", "path_missing"),
    ]
    commands = by_name(report, "commands")
    assert [(c["status"], c["code"]) for c in commands] == [
        ("pass", "ok"),
        ("fail", "command_failed"),
        ("fail", "command_not_found"),
        ("fail", "command_timeout"),
    ]
    assert commands[1]["value"]["exit_code"] == 3
    assert commands[1]["value"]["output"] == ["first line", "second"]
    assert commands[3]["threshold"] == "d-sleeps"
    (cvmfs,) = by_name(report, "cvmfs")
    assert (cvmfs["status"], cvmfs["code"], cvmfs["threshold"]) == (
        "fail",
        "cvmfs_not_mounted",
        "dss-test.example.org",
    )
    assert "dss-test.example.org" in report["facts"]["cvmfs"]["repos"]


def test_it_runs_tools_by_name_with_version_and_no_shell(portal, tmp_path):
    config = portal.config(tools=["python3", "no-such-dss-tool"], timeout_s=5)

    proc, report = run_pilot(config, tmp_path)

    found, missing = by_name(report, "tools")
    assert (found["status"], found["threshold"]) == ("pass", "python3")
    assert found["value"]["path"] == shutil.which("python3")
    assert found["value"]["output"][0].startswith("Python 3")
    assert (missing["status"], missing["code"]) == ("fail", "tool_not_found")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tools", ["sh -c id"]),
        ("tools", ["/bin/sh"]),
        ("tools", ["-rf"]),
        ("commands", ["uname -r"]),
        ("commands", {"id": "sh -c id"}),
        ("commands", {"bad name": ["true"]}),
        ("reach", ["xrd.example.org:1094"]),
        ("reach", [{"name": "XRD", "host": "a b", "port": 1094}]),
    ],
)
def test_shell_text_is_never_a_check(portal, tmp_path, key, value):
    config = portal.config(**{key: value})

    proc, report = run_pilot(config, tmp_path)

    (problem,) = by_name(report, "config")
    assert problem["status"] == "fail" and problem["message"].startswith(f"{key}:")
    assert not by_name(report, key)[0]["threshold"]  # nothing of it ran: the default applies


def test_it_reaches_an_endpoint_or_says_why_not(portal, tmp_path):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        config = portal.config(
            reach=[
                {"name": "XRD", "host": "127.0.0.1", "port": port},
                {"name": "GONE", "host": "127.0.0.1", "port": free_port()},
            ]
        )
        proc, report = run_pilot(config, tmp_path)

    ok, gone = by_name(report, "reach")
    assert (ok["status"], ok["threshold"]) == ("pass", "XRD")
    assert (gone["status"], gone["code"], gone["threshold"]) == ("fail", "reach_failed", "GONE")
    assert "127.0.0.1:" in gone["message"]


def test_control_characters_and_bad_bytes_in_a_commands_output_are_escaped(portal, tmp_path):
    config = portal.config(
        commands={"noisy": ["printf", "a\\000b\\033[31mc\\377d\\n"]}, min_work_disk_gb=0
    )

    proc, report = run_pilot(config, tmp_path)

    (noisy,) = by_name(report, "commands")
    assert noisy["value"]["output"] == ["a\\x00b\\x1b[31mc\ufffdd"]
    assert b"\\u0000" not in portal.posts[0]["body"]
    assert portal.posts  # posted: a report is plain text whatever a tool prints


def test_an_unreachable_portal_is_retried_then_the_pilot_exits_nonzero(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "report_url": dead + "/report",
        "token": TOKEN,
        "report_tries": 3,
        "report_backoff_s": 0.1,
        "min_work_disk_gb": 0,
        "min_tmp_disk_gb": 0,
    }
    proc, report = run_pilot(config, tmp_path)

    assert proc.returncode == pilot.EXIT_UNDELIVERED
    assert proc.stderr.count("retrying") == 2
    assert "not delivered after 3 attempt(s)" in proc.stderr
    # still recoverable from the batch output file
    assert report is not None
    (access,) = by_name(report, "portal_access")
    assert (access["status"], access["code"]) == ("fail", "portal_unreachable")
    assert report["facts"]["clock"]["offset_s"] is None
    assert "clock.offset_s" in report["facts"]["missing"]


def test_a_refusal_is_not_retried(tmp_path):
    with PortalRecorder(answers=[403]) as portal:
        proc, report = run_pilot(portal.config(), tmp_path)

    assert proc.returncode == pilot.EXIT_REJECTED
    assert len(portal.posts) == 1
    assert "HTTP 403" in proc.stderr
    assert report is not None


def test_a_server_error_is_retried_until_the_report_is_accepted(tmp_path):
    with PortalRecorder(answers=[503, 502, 201]) as portal:
        proc, report = run_pilot(portal.config(), tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert len(portal.posts) == 3
    assert all(json.loads(p["body"]) == report for p in portal.posts)
    assert "attempt 3" in proc.stderr


def test_dry_run_prints_without_posting(portal, tmp_path):
    proc, report = run_pilot({"min_work_disk_gb": 0, "min_tmp_disk_gb": 0}, tmp_path, "--dry-run")

    assert proc.returncode == 0
    assert portal.requests == []
    (access,) = by_name(report, "portal_access")
    assert (access["status"], access["code"]) == ("warn", "portal_not_configured")
    assert report["verdict"] == "warning"


# ---------------------------------------------------------------- configuration


def test_a_bad_config_value_fails_the_config_check_but_still_reports(portal, tmp_path):
    config = portal.config(min_cores="many", cvmfs_repos=["../etc"], bogus=1)
    proc, report = run_pilot(config, tmp_path)

    assert proc.returncode == 0, proc.stderr
    (problem,) = by_name(report, "config")
    assert (problem["status"], problem["code"]) == ("fail", "config_invalid")
    for field in ("min_cores", "cvmfs_repos", "bogus"):
        assert field in problem["message"]
    # the bad value fell back to its default instead of stopping the pilot
    assert by_name(report, "cores")[0]["threshold"] == 1
    assert len(portal.posts) == 1


def test_an_unreadable_config_still_prints_a_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(PILOT), "--config-json", "{not json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = pilot.extract_report(proc.stdout)

    assert proc.returncode == pilot.EXIT_BAD_CONFIG
    assert report["verdict"] == "failed"
    assert "--config-json" in by_name(report, "config")[0]["message"]


# ---------------------------------------------------------------- credentials


def test_a_short_token_fails_when_a_credential_is_required(portal, tmp_path):
    token_file = tmp_path / "bt"
    token_file.write_text(
        make_jwt({"iss": "https://iam.example.org/", "exp": int(time.time()) + 3600})
    )
    env = {k: v for k, v in os.environ.items() if k not in ("BEARER_TOKEN", "X509_USER_PROXY")}
    env["BEARER_TOKEN_FILE"] = str(token_file)

    proc, report = run_pilot(
        portal.config(require_credential=True, credential_min_hours=72), tmp_path, env=env
    )

    (cred,) = by_name(report, "credential_lifetime")
    assert (cred["status"], cred["code"]) == ("fail", "credential_expiring")
    assert 0.9 < cred["value"] <= 1.0
    token = report["facts"]["credential"]["token"]
    assert token["issuer"] == "https://iam.example.org/"
    assert token_file.read_text() not in json.dumps(report)

    proc, report = run_pilot(
        portal.config(require_credential=False, credential_min_hours=72), tmp_path, env=env
    )
    assert by_name(report, "credential_lifetime")[0]["status"] == "warn"

    proc, report = run_pilot(
        portal.config(require_credential=True, credential_min_hours=0.5), tmp_path, env=env
    )
    assert by_name(report, "credential_lifetime")[0]["status"] == "pass"


def test_a_missing_credential_fails_only_when_required(portal, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEARER_TOKEN", "X509_"))}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    if Path(f"/tmp/x509up_u{os.getuid()}").exists() or Path(f"/tmp/bt_u{os.getuid()}").exists():
        pytest.skip("this machine has a default-location proxy or token")

    _, report = run_pilot(portal.config(require_credential=True), tmp_path, env=env)
    (cred,) = by_name(report, "credential_lifetime")
    assert (cred["status"], cred["code"]) == ("fail", "credential_missing")

    _, report = run_pilot(portal.config(require_credential=False), tmp_path, env=env)
    (cred,) = by_name(report, "credential_lifetime")
    assert (cred["status"], cred["message"]) == ("pass", "no credential found; none required")


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_a_proxy_lifetime_is_read_with_openssl(portal, tmp_path):
    proxy = tmp_path / "x509up"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "10",
            "-subj",
            "/CN=dss pilot test",
        ]
        + ["-keyout", str(tmp_path / "key.pem"), "-out", str(proxy)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEARER_TOKEN")}
    env["X509_USER_PROXY"] = str(proxy)

    _, report = run_pilot(portal.config(require_credential=True), tmp_path, env=env)

    (cred,) = by_name(report, "credential_lifetime")
    assert cred["status"] == "pass"
    assert 239 < cred["value"] <= 240
    assert report["facts"]["credential"]["proxy"]["path"] == str(proxy)


# ---------------------------------------------------------------- old interpreters


def test_the_pilot_parses_as_python_3_6():
    ast.parse(PILOT.read_text(), feature_version=(3, 6))


def _oldest_python() -> str | None:
    if PY36.exists():
        return str(PY36)
    return shutil.which("python3.6")


def test_it_runs_under_python_3_6(portal, tmp_path):
    python = _oldest_python()
    if python is None:
        pytest.skip("no Python 3.6 on this machine")
    proc, report = run_pilot(portal.config(), tmp_path, python=python)

    assert proc.returncode == 0, proc.stderr
    assert report["facts"]["python"]["version"].startswith("3.6.")
    assert report["verdict"] == "passed"
    assert len(portal.posts) == 1


# ---------------------------------------------------------------- pure helpers


def test_a_node_without_proc_files_gets_null_facts_with_reasons(monkeypatch, tmp_path):
    real_read = pilot.read_text

    def no_proc(path):
        if str(path).startswith(("/proc", "/sys")):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real_read(path)

    monkeypatch.setattr(pilot, "read_text", no_proc)
    config, _ = pilot.normalize_config({"min_memory_mb": 100})
    facts = pilot.gather_facts(config, str(tmp_path))

    assert facts["memory"]["total_mb"] is None
    assert "/proc/meminfo" in facts["missing"]["memory.total_mb"]
    assert facts["cpu"]["model"] is None
    assert "cpu.model" in facts["missing"]
    checks = {c["name"]: c for c in pilot.evaluate(facts, config)}
    assert (checks["memory"]["status"], checks["memory"]["code"]) == ("warn", "memory_unknown")


def test_x86_levels_follow_the_cpu_flags():
    v2 = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
    v3 = v2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert pilot.x86_level({"sse2"}) == "x86_64-v1"
    assert pilot.x86_level(v2) == "x86_64-v2"
    assert pilot.x86_level(v3) == "x86_64-v3"
    assert pilot.x86_level(v4) == "x86_64-v4"
    assert pilot.x86_level(v4 - {"avx2"}) == "x86_64-v2"


def test_openssl_dates_and_jwt_claims_are_read():
    date = pilot.parse_openssl_date("notAfter=Nov  5 13:00:00 2027 GMT")
    assert date.isoformat() == "2027-11-05T13:00:00+00:00"
    assert pilot.decode_jwt_claims(make_jwt({"exp": 123, "sub": "x"}))["exp"] == 123
    with pytest.raises(ValueError):
        pilot.decode_jwt_claims("not-a-jwt")


def test_the_report_is_recovered_from_a_batch_output_file():
    report = {"verdict": "passed", "checks": []}
    text = "module load python\n" + pilot.format_report(report) + "job epilogue\n"
    assert pilot.extract_report(text) == report
    assert pilot.extract_report(pilot.BEGIN_MARKER + "\n{truncated") is None
    assert pilot.extract_report("nothing here") is None


def test_stored_facts_can_be_judged_again_with_new_requirements(portal, tmp_path):
    _, report = run_pilot(portal.config(), tmp_path)
    stricter, problems = pilot.normalize_config({"min_cores": 10000})

    checks = pilot.evaluate(report["facts"], stricter, problems)

    assert pilot.verdict_of(checks) == "failed"
    assert pilot.verdict_of(report["checks"]) == report["verdict"] == "passed"


def test_a_minimum_of_nothing_says_none_is_required():
    from pilotchecker.pilot import check_minimum

    free = check_minimum("memory", 2048, 0, "MB", "memory_low", "memory_unknown", "memory")
    assert (free["status"], free["message"]) == ("pass", "memory: 2048 MB (none required)")
    ok = check_minimum("memory", 2048, 1024, "MB", "memory_low", "memory_unknown", "memory")
    assert ok["message"] == "memory: 2048 MB (required 1024 MB)"
    low = check_minimum("memory", 512, 1024, "MB", "memory_low", "memory_unknown", "memory")
    assert (low["status"], low["code"]) == ("fail", "memory_low")
