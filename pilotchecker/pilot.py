#!/usr/bin/env python3
"""DSS pilot: find out what a compute site's worker node offers, judge it, report to the portal.

One self-contained file, standard library only. It runs on old worker nodes, so it keeps to
Python 3.6 syntax and library. It is written without f-strings so that an even older
Python 3 should get as far as reporting "python too old" rather than a SyntaxError.
The portal imports the same file (``pilotchecker.pilot``) for ``evaluate``, ``verdict_of``,
``extract_report`` and the constants below, so the rules that judge a node live in one place.

Usage on the worker node::

    python3 pilot.py --config pilot.json         # the batch job's command
    python3 pilot.py --config-json '{"report_url": "...", "token": "..."}'
    python3 pilot.py --config pilot.json --dry-run   # gather and print only, never post

Configuration (JSON object; every key optional, ``null`` means the default):

=====================  =========  =====================================================
key                    default    meaning
=====================  =========  =====================================================
report_url             (none)     where the report is POSTed (http/https); required
                                  unless ``--dry-run``
token                  ""         sent as ``Authorization: Pilot <token>``
ping_url               (none)     GET for portal_access and the clock offset; without
                                  it the pilot GETs ``report_url`` (any HTTP answer,
                                  even 405, proves that the portal is reachable)
min_cores              1          cores for the job: the smaller of its CPU affinity
                                  and what the batch system granted (SLURM_CPUS_ON_NODE,
                                  RequestCpus, NCPUS, LSB_DJOB_NUMPROC, NSLOTS)
min_memory_mb          0          memory for the job: the smallest of MemTotal, the
                                  cgroup limit and the batch grant (SLURM_MEM_PER_NODE,
                                  RequestMemory)
min_work_disk_gb       2          free space in the work directory
min_tmp_disk_gb        1          free space in $TMPDIR (or /tmp)
python_min             "3.6"      lowest Python version
credential_min_hours   72         remaining lifetime of the proxy or token
require_credential     false      a missing credential fails only when this is true
cvmfs_repos            []         repositories that must be alive under /cvmfs
paths                  []         paths that must exist ($VARS and ~ are expanded)
tools                  []         programs that must be on PATH, named by a plain name
                                  (``[A-Za-z0-9][A-Za-z0-9_.+-]*``); each is run as
                                  ``<tool> --version``, without a shell, and must exit 0
commands               {}         checks from the portal's allow-list: name -> argv list,
                                  run as given, without a shell, must exit 0. The portal
                                  writes only argv lists its deployment configured
                                  (DSS_PILOT_COMMANDS); text to split is never accepted
reach                  []         network endpoints the node must reach (a storage
                                  element): objects {"name", "host", "port"}; a TCP
                                  connection must open
timeout_s              30         limit per command, per CVMFS/path probe, per HTTP call
report_tries           5          POST attempts on network errors and HTTP 5xx
report_backoff_s       2          first wait between attempts, doubled each time (cap 30)
report_max_s           120        bound on the total time spent reporting
=====================  =========  =====================================================

Checks and their stable codes (``code`` is ``ok`` whenever ``status`` is ``pass``):

=====================  ==================================================================
check                  codes when not passing
=====================  ==================================================================
config                 config_invalid (fail; only present when the config had problems)
python_version         python_too_old
cores                  cores_too_few; cores_unknown (warn)
memory                 memory_too_low; memory_unknown (warn)
work_disk, tmp_disk    disk_too_small; disk_unknown (warn)
credential_lifetime    credential_missing (fail when required), credential_expiring
                       (fail when required, warn otherwise), credential_unreadable (warn)
cvmfs                  cvmfs_not_mounted, cvmfs_unreadable, cvmfs_timeout (fail);
                       cvmfs_io_errors (warn: an I/O error in the last hour)
paths                  path_missing, path_unreadable, path_timeout
tools                  tool_not_found, tool_failed, tool_timeout
commands               command_failed, command_not_found, command_timeout
reach                  reach_failed
portal_access          portal_unreachable (fail); portal_not_configured (warn)
=====================  ==================================================================

Decision on credentials: when none is required and none is found the check passes ("none
required, none found"); a site that runs without grid credentials would otherwise stay in
"warning" for ever and hide real warnings. A credential that is present but shorter than
``credential_min_hours`` warns even when not required, because something on the node meant
to use it and it will expire under running jobs.

The checks ``cvmfs``, ``paths``, ``tools``, ``commands`` and ``reach`` appear once per
required item, with the item (a command's or endpoint's name) as ``threshold``; when nothing
is required they appear once, passing, with threshold ``[]``.

Output that commands print is kept to a few lines; control characters in it (a NUL, an
escape) are written as ``\\xNN`` so that the report is plain text whatever a tool prints.

The report always goes to stdout between the marker lines, before it is posted, so the
portal can recover it from the batch output file even when the POST never got through.
Exit codes: 0 reported (or ``--dry-run``), 2 configuration unusable, 3 the portal refused the
report (HTTP 4xx, not retried), 4 the report could not be delivered (network errors or HTTP
5xx after the retries).
"""

import argparse
import base64
import datetime
import email.utils
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import urllib.error
import urllib.request

PILOT_VERSION = "1.0.0"
BEGIN_MARKER = "=== DSS PILOT REPORT BEGIN ==="
END_MARKER = "=== DSS PILOT REPORT END ==="

EXIT_REPORTED = 0
EXIT_BAD_CONFIG = 2
EXIT_REJECTED = 3
EXIT_UNDELIVERED = 4

PASS, WARN, FAIL = "pass", "warn", "fail"
VERDICTS = {PASS: "passed", WARN: "warning", FAIL: "failed"}
_SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}

DEFAULT_CONFIG = {
    "report_url": None,
    "token": "",
    "ping_url": None,
    "min_cores": 1,
    "min_memory_mb": 0,
    "min_work_disk_gb": 2.0,
    "min_tmp_disk_gb": 1.0,
    "python_min": "3.6",
    "credential_min_hours": 72.0,
    "require_credential": False,
    "cvmfs_repos": [],
    "paths": [],
    "tools": [],
    "commands": {},
    "reach": [],
    "timeout_s": 30.0,
    "report_tries": 5,
    "report_backoff_s": 2.0,
    "report_max_s": 120.0,
}

# CVMFS repository names are DNS-like; anything else could walk out of /cvmfs.
CVMFS_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A tool is named, never given as a path or with arguments: it is looked up on PATH.
TOOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
# Names of allow-listed commands and of reach endpoints.
CHECK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[[0-9A-Fa-f:.]+\]$")
# Control characters other than tab, as they may appear in what a command prints.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
CVMFS_XATTRS = ("revision", "fqrn", "expires", "host", "nioerr", "timestamp_last_ioerr", "version")
CVMFS_RECENT_IOERR_S = 3600

# Only these batch variables are reported: the environment can hold secrets.
BATCH_VARIABLES = {
    "slurm": (
        "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION", "SLURM_JOB_ACCOUNT",
        "SLURM_JOB_QOS", "SLURM_CLUSTER_NAME", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES",
        "SLURM_NTASKS", "SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE",
        "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST",
        "SLURMD_NODENAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_START_TIME",
        "SLURM_JOB_END_TIME", "SLURM_RESTART_COUNT",
    ),
    "htcondor": ("_CONDOR_JOB_AD", "_CONDOR_SCRATCH_DIR", "_CONDOR_SLOT", "_CONDOR_JOB_IWD"),
    "pbs": (
        "PBS_JOBID", "PBS_JOBNAME", "PBS_QUEUE", "PBS_O_WORKDIR", "PBS_O_HOST", "PBS_NUM_NODES",
        "PBS_NUM_PPN", "PBS_NP", "NCPUS", "PBS_ARRAYID", "PBS_ARRAY_INDEX",
    ),
    "lsf": (
        "LSB_JOBID", "LSB_JOBNAME", "LSB_QUEUE", "LSB_HOSTS", "LSB_MCPU_HOSTS",
        "LSB_DJOB_NUMPROC", "LSB_MAX_NUM_PROCESSORS", "LSB_SUB_HOST", "LS_SUBCWD",
        "LSB_JOBINDEX",
    ),
    "sge": ("JOB_ID", "JOB_NAME", "QUEUE", "NSLOTS", "SGE_TASK_ID", "SGE_CELL", "SGE_O_WORKDIR"),
    "local": ("DSS_LOCAL_JOB_ID",),
    "none": (),
}
# (batch system, variable whose presence identifies it, variable holding the job id)
BATCH_DETECTION = (
    ("slurm", "SLURM_JOB_ID", "SLURM_JOB_ID"),
    ("htcondor", "_CONDOR_JOB_AD", None),
    ("pbs", "PBS_JOBID", "PBS_JOBID"),
    ("lsf", "LSB_JOBID", "LSB_JOBID"),
    ("sge", "SGE_ROOT", "JOB_ID"),
    # set by DSS's own LocalAdapter (pilotchecker/batch.py)
    ("local", "DSS_LOCAL_JOB_ID", "DSS_LOCAL_JOB_ID"),
)
# Where each batch system tells the job how many cores and how much memory (MB) it got.
ALLOCATED_CORES_VARS = {
    "slurm": ("SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE"),
    "htcondor": ("job_ad.RequestCpus",),
    "pbs": ("NCPUS", "PBS_NUM_PPN"),
    "lsf": ("LSB_DJOB_NUMPROC",),
    "sge": ("NSLOTS",),
}
ALLOCATED_MEMORY_VARS = {
    "slurm": ("SLURM_MEM_PER_NODE",),
    "htcondor": ("job_ad.RequestMemory",),
}
CONDOR_JOB_AD_KEYS = (
    "ClusterId", "ProcId", "GlobalJobId", "Owner", "RequestCpus", "RequestMemory",
    "RequestDisk", "JobUniverse", "x509UserProxyExpiration",
)

# x86-64 micro-architecture levels (the psABI), as /proc/cpuinfo names the flags.
# Every x86_64 CPU is v1; "pni" is SSE3 and "abm" carries LZCNT.
X86_LEVELS = (
    ("x86_64-v2", ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3")),
    ("x86_64-v3", ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")),
    ("x86_64-v4", ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")),
)

OUTPUT_LINES = 5
OUTPUT_LINE_CHARS = 200
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# ---------------------------------------------------------------- small helpers


def utc_now():
    """The current time, timezone-aware, in UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def iso(dt):
    """ISO 8601 text for an aware datetime, to the second."""
    return dt.replace(microsecond=0).isoformat()


def log(message):
    """Progress for the person reading the batch job's error file."""
    sys.stderr.write("dss-pilot: %s\n" % message)
    sys.stderr.flush()


def read_text(path):
    """The whole text of a small file (a /proc or /sys entry, a config file)."""
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def describe(exc):
    """One line naming an exception, for a "reason" field."""
    text = str(exc).strip()
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def with_timeout(function, timeout):
    """Run ``function()`` in a daemon thread, give up after ``timeout`` seconds.

    A stale CVMFS or NFS mount can hang ``stat`` for minutes in uninterruptible sleep; the
    pilot must still report. Returns ``(finished, result_or_exception)``.
    """
    box = {}

    def target():
        try:
            box["result"] = function()
        except Exception as exc:  # the caller turns it into a reason
            box["error"] = exc

    worker = threading.Thread(target=target)
    worker.daemon = True
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return False, None
    if "error" in box:
        return True, box["error"]
    return True, box.get("result")


def run_command(argv, timeout):
    """Run ``argv`` (no shell) with a time limit; exit code, first output lines, duration.

    The command gets its own session so that on timeout its whole process group is killed:
    a grandchild holding the output pipe would otherwise keep us waiting.
    """
    started = time.time()
    result = {"argv": list(argv), "exit_code": None, "output": [], "seconds": None,
              "timed_out": False, "error": None}
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        result["error"] = describe(exc)
        result["not_found"] = isinstance(exc, FileNotFoundError)
        return result
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        result["timed_out"] = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out = b""
    result["exit_code"] = proc.returncode
    result["seconds"] = round(time.time() - started, 3)
    result["output"] = output_lines(out)
    return result


def escape_control(text):
    """``text`` with control characters (NUL, ESC...) written as ``\\xNN``: a report is text."""
    return CONTROL_RE.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def output_lines(data):
    """The first lines a command printed, decoded leniently, control characters escaped."""
    lines = data.decode("utf-8", "replace").splitlines()
    return [escape_control(line)[:OUTPUT_LINE_CHARS] for line in lines[:OUTPUT_LINES]]


def parse_version(text):
    """``"3.6"``, ``"3.13.0rc1"`` or ``[3, 6]`` -> ``(3, 6)``...; ValueError on anything else."""
    if isinstance(text, (list, tuple)):
        parts = [int(p) for p in text]
    else:
        match = re.match(r"^\s*(\d+(?:\.\d+)*)", str(text))
        if not match:
            raise ValueError("not a version: %r" % (text,))
        parts = [int(p) for p in match.group(1).split(".")]
    if not parts or any(p < 0 for p in parts):
        raise ValueError("not a version: %r" % (text,))
    return tuple(parts)


# ---------------------------------------------------------------- configuration


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_url(value):
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        return "must be an http:// or https:// URL"
    return None


def _check_str_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "must be a list of non-empty strings"
    return None


def _check_repos(value):
    problem = _check_str_list(value)
    if problem:
        return problem
    bad = [v for v in value if not CVMFS_REPO_RE.match(v)]
    return "not a repository name: %s" % ", ".join(bad) if bad else None


def _check_tools(value):
    problem = _check_str_list(value)
    if problem:
        return problem
    bad = [v for v in value if not TOOL_RE.match(v)]
    if bad:
        return ("not a tool name: %s (a name looked up on PATH: letters, digits and _.+-, "
                "no path, no arguments)" % ", ".join(repr(b) for b in bad))
    return None


def _check_commands(value):
    if not isinstance(value, dict):
        return ("must be an object of name: argv list from the portal's allow-list "
                "(text to split or to give a shell is never accepted)")
    for name, argv in value.items():
        if not CHECK_NAME_RE.match(name):
            return "not a command name: %r" % (name,)
        if not (isinstance(argv, list) and argv
                and all(isinstance(a, str) and a and "\0" not in a for a in argv)):
            return "%s: must be a non-empty list of non-empty strings (an argv)" % name
    return None


def _check_reach(value):
    if not isinstance(value, list):
        return "must be a list of {\"name\", \"host\", \"port\"} objects"
    for item in value:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and CHECK_NAME_RE.match(item["name"]) and isinstance(item.get("host"), str)
                and HOST_RE.match(item["host"]) and isinstance(item.get("port"), int)
                and not isinstance(item.get("port"), bool) and 0 < item["port"] < 65536):
            return "not a {\"name\", \"host\", \"port\"} endpoint: %r" % (item,)
    return None


def _number_at_least(minimum, integer=False):
    def check(value):
        if not _is_number(value) or (integer and not isinstance(value, int)):
            return "must be %s" % ("an integer" if integer else "a number")
        if value < minimum:
            return "must be >= %s" % minimum
        return None
    return check


def _check_python_min(value):
    try:
        parse_version(value)
    except (TypeError, ValueError):
        return 'must be a version like "3.6"'
    return None


def _check_bool(value):
    return None if isinstance(value, bool) else "must be true or false"


def _check_token(value):
    return None if isinstance(value, str) else "must be a string"


CONFIG_RULES = {
    "report_url": _check_url,
    "token": _check_token,
    "ping_url": _check_url,
    "min_cores": _number_at_least(0, integer=True),
    "min_memory_mb": _number_at_least(0),
    "min_work_disk_gb": _number_at_least(0),
    "min_tmp_disk_gb": _number_at_least(0),
    "python_min": _check_python_min,
    "credential_min_hours": _number_at_least(0),
    "require_credential": _check_bool,
    "cvmfs_repos": _check_repos,
    "paths": _check_str_list,
    "tools": _check_tools,
    "commands": _check_commands,
    "reach": _check_reach,
    "timeout_s": _number_at_least(0.1),
    "report_tries": _number_at_least(1, integer=True),
    "report_backoff_s": _number_at_least(0),
    "report_max_s": _number_at_least(0.1),
}


def normalize_config(raw):
    """Merge ``raw`` (a parsed JSON object) over the defaults.

    Returns ``(config, problems)``: a bad value falls back to its default and is named in
    ``problems`` (``["min_cores: must be an integer"]``), so one typo costs one requirement,
    not the whole report. Unknown keys are named too, because a misspelt requirement
    silently not checked is worse than a failing pilot.
    """
    config = dict(DEFAULT_CONFIG)
    problems = []
    if not isinstance(raw, dict):
        return config, ["the configuration must be a JSON object"]
    for key in sorted(raw):
        value = raw[key]
        if key not in CONFIG_RULES:
            problems.append("%s: unknown key" % key)
            continue
        if value is None:
            continue
        problem = CONFIG_RULES[key](value)
        if problem:
            problems.append("%s: %s" % (key, problem))
        else:
            config[key] = value
    return config, problems


def load_config(path=None, text=None):
    """Read the JSON configuration from a file or a string; ``(config, problems)``."""
    try:
        if path is not None:
            text = read_text(path)
        raw = json.loads(text) if text is not None else {}
    except (OSError, ValueError) as exc:
        where = path if path is not None else "--config-json"
        config = dict(DEFAULT_CONFIG)
        return config, ["cannot read the configuration from %s: %s" % (where, describe(exc))]
    return normalize_config(raw)


# ---------------------------------------------------------------- facts


class Facts(object):
    """The facts dictionary being built, plus a reason for each fact that came out null."""

    def __init__(self):
        self.data = {}
        self.missing = {}

    def gather(self, name, function, *args):
        """``data[name] = function(self, *args)``; an unexpected error nulls the group."""
        try:
            self.data[name] = function(self, *args)
        except Exception as exc:  # a fact-gathering bug must not cost the report
            self.data[name] = None
            self.unavailable(name, "unexpected error: %s" % describe(exc))

    def unavailable(self, key, reason):
        """Record why fact ``key`` (dotted, e.g. ``cpu.sockets``) is null."""
        self.missing[key] = reason

    def result(self):
        """The facts as the report carries them, with ``missing`` reasons last."""
        out = dict(self.data)
        out["missing"] = dict(self.missing)
        return out


def gather_host(facts):
    """Host name and identity of the account the pilot runs as."""
    info = {"hostname": socket.gethostname(), "uid": None, "user": None}
    try:
        info["uid"] = os.getuid()
    except AttributeError:
        facts.unavailable("host.uid", "no os.getuid on this platform")
    for var in ("USER", "LOGNAME"):
        if os.environ.get(var):
            info["user"] = os.environ[var]
            break
    return info


def parse_os_release(text):
    """``/etc/os-release`` text -> ``{"ID": "debian", ...}`` (quotes removed)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
            value = parts[0] if parts else ""
        except ValueError:
            value = value.strip("\"'")
        values[key.strip()] = value
    return values


def gather_os(facts):
    """Distribution (from /etc/os-release), kernel, system name."""
    uname = platform.uname()
    info = {"id": None, "version_id": None, "pretty_name": None,
            "system": uname.system, "kernel": uname.release, "kernel_version": uname.version}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            release = parse_os_release(read_text(path))
        except OSError:
            continue
        info["id"] = release.get("ID")
        info["version_id"] = release.get("VERSION_ID")
        info["pretty_name"] = release.get("PRETTY_NAME")
        break
    else:
        facts.unavailable("os.id", "no /etc/os-release or /usr/lib/os-release")
    return info


def parse_cpuinfo(text):
    """The fields the pilot uses from /proc/cpuinfo: model, flags, physical ids."""
    model = None
    flags = None
    physical_ids = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if model is None and key in ("model name", "hardware", "cpu model", "cpu"):
            model = value or None
        elif flags is None and key in ("flags", "features"):
            flags = set(value.split())
        elif key == "physical id":
            physical_ids.add(value)
    return {"model": model, "flags": flags, "physical_ids": physical_ids}


def x86_level(flags):
    """The highest x86-64 psABI level whose flags are all present (at least v1)."""
    level = "x86_64-v1"
    for name, required in X86_LEVELS:
        if not all(flag in flags for flag in required):
            break
        level = name
    return level


def count_sockets_sysfs():
    """Distinct physical package ids under /sys, or None when sysfs does not say."""
    base = "/sys/devices/system/cpu"
    packages = set()
    for entry in os.listdir(base):
        if not re.match(r"^cpu\d+$", entry):
            continue
        try:
            packages.add(read_text(os.path.join(base, entry, "topology/physical_package_id")).strip())
        except OSError:
            continue
    return len(packages) or None


def gather_cpu(facts):
    """Model, logical and usable cores, sockets, architecture and its level."""
    machine = platform.machine()
    info = {"model": None, "logical_cores": os.cpu_count(), "usable_cores": None,
            "sockets": None, "arch": machine or None, "arch_level": None}
    if info["logical_cores"] is None:
        facts.unavailable("cpu.logical_cores", "os.cpu_count() does not know")
    try:
        # The batch system may pin the job to fewer cores than the node has.
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cores"] = info["logical_cores"]
    cpuinfo = None
    try:
        cpuinfo = parse_cpuinfo(read_text("/proc/cpuinfo"))
    except OSError as exc:
        facts.unavailable("cpu.model", "cannot read /proc/cpuinfo: %s" % describe(exc))
    if cpuinfo is not None:
        info["model"] = cpuinfo["model"] or platform.processor() or None
        if info["model"] is None:
            facts.unavailable("cpu.model", "/proc/cpuinfo names no model")
    try:
        info["sockets"] = count_sockets_sysfs()
    except OSError:
        info["sockets"] = None
    if info["sockets"] is None and cpuinfo is not None and cpuinfo["physical_ids"]:
        info["sockets"] = len(cpuinfo["physical_ids"])
    if info["sockets"] is None:
        facts.unavailable("cpu.sockets", "neither /sys topology nor /proc/cpuinfo names packages")
    if machine in ("x86_64", "AMD64", "amd64"):
        if cpuinfo is not None and cpuinfo["flags"] is not None:
            info["arch_level"] = x86_level(cpuinfo["flags"])
        else:
            facts.unavailable("cpu.arch_level", "no CPU flags in /proc/cpuinfo")
    elif machine:
        # Other architectures have no psABI levels in common use: the machine name is the level.
        info["arch_level"] = machine
    else:
        facts.unavailable("cpu.arch", "platform.machine() is empty")
    return info


def parse_meminfo(text):
    """/proc/meminfo -> ``{"MemTotal": kB, ...}``."""
    values = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    return values


def cgroup_memory_limit_mb():
    """The memory limit of this process's cgroup in MB, or None when there is none.

    cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``); inside a cgroup
    namespace the path in /proc/self/cgroup is "/", so the root files are tried too.
    """
    candidates = []
    try:
        for line in read_text("/proc/self/cgroup").splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            controllers, path = parts[1], parts[2].strip()
            if controllers == "":
                candidates.append("/sys/fs/cgroup%s/memory.max" % path.rstrip("/"))
            elif "memory" in controllers.split(","):
                candidates.append("/sys/fs/cgroup/memory%s/memory.limit_in_bytes" % path.rstrip("/"))
    except OSError:
        pass
    candidates += ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    for path in candidates:
        try:
            text = read_text(path).strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit():
            return None
        limit = int(text)
        # v1 reports "no limit" as a huge page-rounded number.
        return None if limit >= 2 ** 60 else limit // (1024 * 1024)
    return None


def gather_memory(facts):
    """Total and available memory, and the cgroup limit, in MB."""
    info = {"total_mb": None, "available_mb": None, "cgroup_limit_mb": None, "job_limit_mb": None}
    try:
        meminfo = parse_meminfo(read_text("/proc/meminfo"))
    except OSError as exc:
        meminfo = {}
        facts.unavailable("memory.total_mb", "cannot read /proc/meminfo: %s" % describe(exc))
    if "MemTotal" in meminfo:
        info["total_mb"] = meminfo["MemTotal"] // 1024
    if "MemAvailable" in meminfo:
        info["available_mb"] = meminfo["MemAvailable"] // 1024
    elif "MemFree" in meminfo:
        # Kernels before 3.14 have no MemAvailable; this is the usual estimate.
        free = sum(meminfo.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
        info["available_mb"] = free // 1024
    elif meminfo:
        facts.unavailable("memory.available_mb", "/proc/meminfo has no MemAvailable or MemFree")
    info["cgroup_limit_mb"] = cgroup_memory_limit_mb()
    limits = [v for v in (info["total_mb"], info["cgroup_limit_mb"]) if v is not None]
    info["job_limit_mb"] = min(limits) if limits else None
    return info


def disk_fact(facts, key, path):
    """Free and total space of the file system holding ``path``, in GB."""
    info = {"path": path, "free_gb": None, "total_gb": None}
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        facts.unavailable("disk.%s" % key, "cannot stat %s: %s" % (path, describe(exc)))
        return info
    info["free_gb"] = round(usage.free / 1e9, 2)
    info["total_gb"] = round(usage.total / 1e9, 2)
    return info


def gather_disk(facts, workdir):
    """Free space in the work directory and in the temporary directory."""
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return {"work": disk_fact(facts, "work", workdir), "tmp": disk_fact(facts, "tmp", tmp)}


def gather_python(facts):
    """The interpreter running the pilot."""
    return {
        "version": platform.python_version(),
        "executable": sys.executable or None,
        "implementation": platform.python_implementation(),
    }


def read_condor_ad(path):
    """Selected attributes of an HTCondor ClassAd file (``Key = Value`` lines)."""
    values = {}
    for line in read_text(path).splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key in CONDOR_JOB_AD_KEYS:
            values[key] = value.strip().strip('"')
    return values


def gather_batch(facts):
    """Which batch system runs the pilot, its job id and whitelisted job variables."""
    env = os.environ
    system, job_id = "none", None
    for name, marker, id_var in BATCH_DETECTION:
        if env.get(marker):
            system = name
            job_id = env.get(id_var) if id_var else None
            break
    variables = dict((k, env[k]) for k in BATCH_VARIABLES[system] if k in env)
    info = {"system": system, "job_id": job_id, "variables": variables,
            "allocated_cores": None, "allocated_memory_mb": None}
    if system == "htcondor":
        try:
            ad = read_condor_ad(env["_CONDOR_JOB_AD"])
        except OSError as exc:
            facts.unavailable("batch.job_ad", "cannot read _CONDOR_JOB_AD: %s" % describe(exc))
            ad = {}
        info["job_ad"] = ad
        if ad.get("ClusterId") is not None:
            info["job_id"] = "%s.%s" % (ad["ClusterId"], ad.get("ProcId", "0"))
        elif ad.get("GlobalJobId"):
            info["job_id"] = ad["GlobalJobId"]
        variables = dict(variables, **dict(("job_ad." + k, v) for k, v in ad.items()))
    info["allocated_cores"] = _first_int(variables, ALLOCATED_CORES_VARS.get(system, ()))
    info["allocated_memory_mb"] = _first_int(variables, ALLOCATED_MEMORY_VARS.get(system, ()))
    if (info["allocated_memory_mb"] is None and system == "slurm"
            and _first_int(variables, ("SLURM_MEM_PER_CPU",)) and info["allocated_cores"]):
        info["allocated_memory_mb"] = (_first_int(variables, ("SLURM_MEM_PER_CPU",))
                                       * info["allocated_cores"])
    return info


def _first_int(variables, names):
    """The first of ``names`` in ``variables`` that holds a whole number (e.g. "4", "4(x2)")."""
    for name in names:
        match = re.match(r"^\s*(\d+)", str(variables.get(name, "")))
        if match:
            return int(match.group(1))
    return None


def cvmfs_mounts():
    """Repositories mounted under /cvmfs according to /proc/mounts (FUSE source cvmfs2)."""
    mounted = []
    for line in read_text("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith("/cvmfs/") and (
                parts[0] == "cvmfs2" or parts[2] == "fuse.cvmfs2"):
            mounted.append(parts[1][len("/cvmfs/"):])
    return sorted(mounted)


def read_xattr(path, name, timeout):
    """One extended attribute as text: os.getxattr, else the ``attr`` command; None if absent."""
    if hasattr(os, "getxattr"):
        try:
            return os.getxattr(path, "user." + name).decode("utf-8", "replace").strip()
        except OSError:
            return None
    if shutil.which("attr"):
        result = run_command(["attr", "-q", "-g", name, path], timeout)
        if result["exit_code"] == 0 and result["output"]:
            return result["output"][0].strip()
    return None


def probe_cvmfs_repo(repo, timeout):
    """Whether /cvmfs/<repo> exists and lists, and its revision and health attributes.

    Listing the directory is what triggers the autofs mount, so it comes first.
    """
    path = "/cvmfs/" + repo
    info = {"path": path, "exists": False, "readable": False, "entries": None,
            "revision": None, "root_mtime": None, "age_hours": None, "xattrs": {}}
    if not os.path.isdir("/cvmfs"):
        info["reason"] = "/cvmfs does not exist on this node"
        return info
    try:
        entries = os.listdir(path)
        info["exists"] = True
        info["readable"] = True
        info["entries"] = len(entries)
    except OSError as exc:
        info["exists"] = os.path.exists(path)
        info["reason"] = "cannot list %s: %s" % (path, describe(exc))
        return info
    try:
        mtime = os.stat(path).st_mtime
        info["root_mtime"] = iso(datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc))
        info["age_hours"] = round((time.time() - mtime) / 3600.0, 2)
    except OSError:
        pass
    for name in CVMFS_XATTRS:
        value = read_xattr(path, name, timeout)
        if value is not None:
            info["xattrs"][name] = value
    if info["xattrs"].get("revision", "").isdigit():
        info["revision"] = int(info["xattrs"]["revision"])
    else:
        info["reason_revision"] = "no user.revision attribute (not a CVMFS mount, or xattrs off)"
    return info


def gather_cvmfs(facts, repos, timeout):
    """Mounted CVMFS repositories and the state of each required one."""
    info = {"mounted": None, "repos": {}}
    try:
        info["mounted"] = cvmfs_mounts()
    except OSError as exc:
        facts.unavailable("cvmfs.mounted", "cannot read /proc/mounts: %s" % describe(exc))
    for repo in repos:
        finished, result = with_timeout(lambda r=repo: probe_cvmfs_repo(r, timeout), timeout)
        if not finished:
            result = {"path": "/cvmfs/" + repo, "exists": None, "readable": False,
                      "timed_out": True, "reason": "no answer within %ss" % timeout}
        elif isinstance(result, Exception):
            result = {"path": "/cvmfs/" + repo, "exists": None, "readable": False,
                      "reason": describe(result)}
        info["repos"][repo] = result
    return info


def probe_path(path):
    """Existence, kind and readability of one path."""
    info = {"exists": os.path.exists(path), "kind": None, "readable": False}
    if info["exists"]:
        info["kind"] = "dir" if os.path.isdir(path) else "file" if os.path.isfile(path) else "other"
        info["readable"] = os.access(path, os.R_OK)
    return info


def gather_paths(facts, paths, timeout):
    """For each required path (``$VARS`` and ``~`` expanded): exists, kind, readable."""
    results = []
    for given in paths:
        expanded = os.path.expanduser(os.path.expandvars(given))
        finished, result = with_timeout(lambda p=expanded: probe_path(p), timeout)
        if not finished:
            result = {"exists": None, "kind": None, "readable": False, "timed_out": True}
        elif isinstance(result, Exception):
            result = {"exists": None, "kind": None, "readable": False, "error": describe(result)}
        result["path"] = given
        result["expanded"] = expanded
        results.append(result)
    return results


def gather_tools(facts, tools, timeout):
    """Find each required tool on PATH and run ``<tool> --version`` (no shell)."""
    results = []
    for tool in tools:
        path = shutil.which(tool)
        if path is None:
            result = {"argv": [tool, "--version"], "exit_code": None, "output": [],
                      "seconds": None, "timed_out": False, "not_found": True,
                      "error": "not found on PATH (%s)" % os.environ.get("PATH", "")}
        else:
            result = run_command([path, "--version"], timeout)
        result["tool"] = tool
        result["path"] = path
        results.append(result)
    return results


def gather_commands(facts, commands, timeout):
    """Run each allow-listed command once, as its argv; exit code and first output lines."""
    results = []
    for name in sorted(commands):
        result = run_command(list(commands[name]), timeout)
        result["command"] = name
        results.append(result)
    return results


def gather_reach(facts, endpoints, timeout):
    """Open a TCP connection to each endpoint; whether it opened and how long it took."""
    results = []
    for endpoint in endpoints:
        host = endpoint["host"].strip("[]")
        result = {"name": endpoint["name"], "host": endpoint["host"], "port": endpoint["port"],
                  "connected": False, "seconds": None, "error": None}
        started = time.time()
        try:
            connection = socket.create_connection((host, endpoint["port"]), timeout=timeout)
            connection.close()
            result["connected"] = True
        except (OSError, ValueError) as exc:
            result["error"] = describe(exc)
        result["seconds"] = round(time.time() - started, 3)
        results.append(result)
    return results


def parse_openssl_date(text):
    """``notAfter=Nov 25 13:00:00 2027 GMT`` -> aware datetime (locale-independent)."""
    match = re.search(r"([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+(\d{4})", text)
    if not match or match.group(1) not in _MONTHS:
        raise ValueError("cannot read a date in %r" % text)
    month = _MONTHS.index(match.group(1)) + 1
    day, hour, minute, second, year = (int(match.group(i)) for i in range(2, 7))
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)


def decode_jwt_claims(token):
    """The payload of a JWT as a dict (no signature check: only ``exp`` is wanted)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT (expected three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")).decode("utf-8"))
    if not isinstance(claims, dict):
        raise ValueError("JWT payload is not an object")
    return claims


def proxy_fact(facts, uid, timeout, now):
    """The X.509 proxy: where it is and when it expires (via ``openssl x509``)."""
    path = os.environ.get("X509_USER_PROXY")
    source = "X509_USER_PROXY"
    if not path and uid is not None:
        path, source = "/tmp/x509up_u%d" % uid, "default location"
    if not path or not os.path.exists(path):
        return None
    info = {"path": path, "source": source, "not_after": None, "remaining_hours": None}
    if not shutil.which("openssl"):
        info["reason"] = "openssl not found"
        facts.unavailable("credential.proxy.not_after", "openssl not found")
        return info
    result = run_command(["openssl", "x509", "-noout", "-enddate", "-in", path], timeout)
    try:
        if result["exit_code"] != 0:
            raise ValueError("openssl exit %s: %s" % (result["exit_code"],
                                                     " ".join(result["output"]) or result["error"]))
        not_after = parse_openssl_date(" ".join(result["output"]))
    except ValueError as exc:
        info["reason"] = str(exc)
        facts.unavailable("credential.proxy.not_after", str(exc))
        return info
    info["not_after"] = iso(not_after)
    info["remaining_hours"] = round((not_after - now).total_seconds() / 3600.0, 2)
    return info


def token_fact(facts, uid, now):
    """The bearer token (WLCG discovery order) and its ``exp``; the token itself is never reported."""
    token, source = os.environ.get("BEARER_TOKEN"), "BEARER_TOKEN"
    if not token:
        candidates = [("BEARER_TOKEN_FILE", os.environ.get("BEARER_TOKEN_FILE"))]
        if uid is not None:
            if os.environ.get("XDG_RUNTIME_DIR"):
                candidates.append(("XDG_RUNTIME_DIR",
                                   os.path.join(os.environ["XDG_RUNTIME_DIR"], "bt_u%d" % uid)))
            candidates.append(("default location", "/tmp/bt_u%d" % uid))
        for name, path in candidates:
            if path and os.path.isfile(path):
                try:
                    token, source = read_text(path).strip(), "%s (%s)" % (name, path)
                except OSError as exc:
                    facts.unavailable("credential.token", "cannot read %s: %s" % (path, describe(exc)))
                    continue
                break
    if not token:
        return None
    info = {"source": source, "issuer": None, "expires_at": None, "remaining_hours": None}
    try:
        claims = decode_jwt_claims(token)
        info["issuer"] = claims.get("iss")
        exp = claims.get("exp")
        if not _is_number(exp):
            raise ValueError("the token has no numeric exp claim")
    except (ValueError, UnicodeError, TypeError) as exc:
        info["reason"] = describe(exc)
        facts.unavailable("credential.token.expires_at", describe(exc))
        return info
    expires = datetime.datetime.fromtimestamp(exp, datetime.timezone.utc)
    info["expires_at"] = iso(expires)
    info["remaining_hours"] = round((expires - now).total_seconds() / 3600.0, 2)
    return info


def gather_credential(facts, timeout):
    """The grid proxy and the bearer token, each ``None`` when absent."""
    uid = (facts.data.get("host") or {}).get("uid")
    now = utc_now()
    return {"proxy": proxy_fact(facts, uid, timeout, now), "token": token_fact(facts, uid, now)}


def http_request(url, token, timeout, data=None):
    """One HTTP request; ``(status, headers, body, error)``, an HTTP error status is an answer."""
    headers = {"User-Agent": "dss-pilot/%s" % PILOT_VERSION, "Accept": "application/json"}
    if token:
        headers["Authorization"] = "Pilot " + token
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers,
                                     method="POST" if data is not None else "GET")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
        try:
            return response.status, response.headers, response.read(4096), None
        finally:
            response.close()
    except urllib.error.HTTPError as exc:
        body = b""
        try:
            body = exc.read(4096)
        except Exception:  # the error body is a courtesy; the status is what matters
            pass
        return exc.code, exc.headers, body, None
    except Exception as exc:  # URLError, timeouts, resets, TLS errors: all "unreachable"
        reason = getattr(exc, "reason", None)
        return None, None, b"", describe(reason) if isinstance(reason, Exception) else describe(exc)


def gather_portal(facts, config):
    """Outbound HTTP to the portal, and the clock offset from its ``Date`` header."""
    url = config["ping_url"] or config["report_url"]
    info = {"url": url, "http_status": None, "error": None, "rtt_s": None}
    clock = {"portal_date": None, "offset_s": None}
    facts.data["clock"] = clock
    if not url:
        info["error"] = "no ping_url or report_url configured"
        facts.unavailable("clock.offset_s", "no portal URL to ask")
        return info
    sent = time.time()
    status, headers, _, error = http_request(url, config["token"], config["timeout_s"])
    received = time.time()
    info["http_status"], info["error"] = status, error
    info["rtt_s"] = round(received - sent, 3)
    date = headers.get("Date") if headers is not None else None
    if date:
        try:
            portal = email.utils.parsedate_to_datetime(date)
            # The portal stamped the answer somewhere during the round trip: compare with the middle.
            local = datetime.datetime.fromtimestamp((sent + received) / 2.0, datetime.timezone.utc)
            clock["portal_date"] = date
            clock["offset_s"] = round((portal - local).total_seconds(), 1)
        except (TypeError, ValueError) as exc:
            facts.unavailable("clock.offset_s", "bad Date header %r: %s" % (date, describe(exc)))
    elif status is None:
        facts.unavailable("clock.offset_s", "portal unreachable: %s" % error)
    else:
        facts.unavailable("clock.offset_s", "the portal's answer had no Date header")
    return info


def gather_facts(config, workdir):
    """Everything the pilot finds on this node, as a JSON-ready dict (see the module doc)."""
    facts = Facts()
    timeout = config["timeout_s"]
    facts.gather("host", gather_host)
    facts.gather("os", gather_os)
    facts.gather("cpu", gather_cpu)
    facts.gather("memory", gather_memory)
    facts.gather("disk", gather_disk, workdir)
    facts.gather("python", gather_python)
    facts.gather("batch", gather_batch)
    facts.gather("cvmfs", gather_cvmfs, config["cvmfs_repos"], timeout)
    facts.gather("paths", gather_paths, config["paths"], timeout)
    facts.gather("tools", gather_tools, config["tools"], timeout)
    facts.gather("commands", gather_commands, config["commands"], timeout)
    facts.gather("reach", gather_reach, config["reach"], timeout)
    facts.gather("credential", gather_credential, timeout)
    facts.gather("portal", gather_portal, config)
    return facts.result()


# ---------------------------------------------------------------- checks


def check(name, status, message, value=None, threshold=None, code="ok"):
    """One entry of the report's ``checks`` list."""
    return {"name": name, "code": "ok" if status == PASS else code, "status": status,
            "message": message, "value": value, "threshold": threshold}


def _group(facts, name):
    return facts.get(name) or {}


def _amount(value, unit):
    return "%s %s" % (value, unit) if unit else str(value)


def check_minimum(name, value, threshold, unit, code_low, code_unknown, what):
    """A ``value >= threshold`` check; unknown values warn (or pass when nothing is required)."""
    need = _amount(threshold, unit)
    if value is None:
        if not threshold:
            return check(name, PASS, "%s: unknown; none required" % what, None, threshold)
        return check(name, WARN, "%s: unknown, cannot compare with the required %s" % (what, need),
                     None, threshold, code_unknown)
    if value < threshold:
        return check(name, FAIL, "%s: %s, below the required %s" % (what, _amount(value, unit), need),
                     value, threshold, code_low)
    wanted = "required %s" % need if threshold else "none required"
    return check(name, PASS, "%s: %s (%s)" % (what, _amount(value, unit), wanted), value,
                 threshold)


def check_python(facts, config):
    """python_version: the interpreter is at least ``python_min``."""
    have = _group(facts, "python").get("version")
    need = config["python_min"]
    need_text = ".".join(str(p) for p in parse_version(need))
    if have is None:
        return check("python_version", WARN, "Python version unknown", None, need_text,
                     "python_too_old")
    if parse_version(have) < parse_version(need):
        return check("python_version", FAIL, "Python %s is older than the required %s"
                     % (have, need_text), have, need_text, "python_too_old")
    return check("python_version", PASS, "Python %s (required %s)" % (have, need_text), have,
                 need_text)


def check_credential(facts, config):
    """credential_lifetime: the longer-lived of proxy and token lasts ``credential_min_hours``."""
    need = config["credential_min_hours"]
    required = config["require_credential"]
    cred = _group(facts, "credential")
    found = [c for c in (cred.get("proxy"), cred.get("token")) if c]
    name = "credential_lifetime"
    if not found:
        if required:
            return check(name, FAIL, "no grid proxy or bearer token found, and one is required",
                         None, need, "credential_missing")
        return check(name, PASS, "no credential found; none required", None, need)
    known = [c for c in found if c.get("remaining_hours") is not None]
    if not known:
        reasons = "; ".join(c.get("reason", "unknown") for c in found)
        return check(name, WARN, "credential found but its lifetime is unknown: %s" % reasons,
                     None, need, "credential_unreadable")
    best = max(known, key=lambda c: c["remaining_hours"])
    kind = "proxy" if best is cred.get("proxy") else "token"
    hours = best["remaining_hours"]
    if hours < need:
        status = FAIL if required else WARN
        verb = "has expired" if hours <= 0 else "has %s h left" % hours
        return check(name, status, "the %s %s; %s h are required" % (kind, verb, need), hours,
                     need, "credential_expiring")
    return check(name, PASS, "the %s has %s h left (required %s)" % (kind, hours, need), hours,
                 need)


def check_cvmfs(facts, config):
    """cvmfs: one check per required repository."""
    repos = config["cvmfs_repos"]
    if not repos:
        return [check("cvmfs", PASS, "no CVMFS repositories required", None, [])]
    states = _group(facts, "cvmfs").get("repos") or {}
    now = time.time()
    out = []
    for repo in repos:
        state = states.get(repo)
        if not state:
            out.append(check("cvmfs", FAIL, "/cvmfs/%s was not probed" % repo, None, repo,
                             "cvmfs_not_mounted"))
        elif state.get("timed_out"):
            out.append(check("cvmfs", FAIL, "/cvmfs/%s: %s" % (repo, state.get("reason")), None,
                             repo, "cvmfs_timeout"))
        elif not state.get("exists"):
            out.append(check("cvmfs", FAIL, "/cvmfs/%s is not mounted: %s"
                             % (repo, state.get("reason", "")), None, repo, "cvmfs_not_mounted"))
        elif not state.get("readable"):
            out.append(check("cvmfs", FAIL, "/cvmfs/%s is not readable: %s"
                             % (repo, state.get("reason", "")), None, repo, "cvmfs_unreadable"))
        else:
            value = {"revision": state.get("revision"), "age_hours": state.get("age_hours")}
            last_err = (state.get("xattrs") or {}).get("timestamp_last_ioerr", "")
            if last_err.isdigit() and int(last_err) > 0 and now - int(last_err) < CVMFS_RECENT_IOERR_S:
                out.append(check("cvmfs", WARN, "/cvmfs/%s had an I/O error %d s ago (%s errors in all)"
                                 % (repo, now - int(last_err), state["xattrs"].get("nioerr", "?")),
                                 value, repo, "cvmfs_io_errors"))
            else:
                out.append(check("cvmfs", PASS, "/cvmfs/%s is alive, revision %s"
                                 % (repo, state.get("revision")), value, repo))
    return out


def check_paths(facts, config):
    """paths: one check per required path."""
    if not config["paths"]:
        return [check("paths", PASS, "no paths required", None, [])]
    out = []
    for result in facts.get("paths") or []:
        path = result["path"]
        shown = path if result.get("expanded") in (None, path) else "%s (%s)" % (path, result["expanded"])
        value = {"exists": result.get("exists"), "kind": result.get("kind"),
                 "readable": result.get("readable")}
        if result.get("timed_out"):
            out.append(check("paths", FAIL, "%s: no answer within %ss" % (shown, config["timeout_s"]),
                             value, path, "path_timeout"))
        elif not result.get("exists"):
            out.append(check("paths", FAIL, "%s does not exist%s" % (
                shown, (": " + result["error"]) if result.get("error") else ""), value, path,
                "path_missing"))
        elif not result.get("readable"):
            out.append(check("paths", FAIL, "%s exists but is not readable" % shown, value, path,
                             "path_unreadable"))
        else:
            out.append(check("paths", PASS, "%s exists (%s)" % (shown, result["kind"]), value, path))
    if len(out) < len(config["paths"]):
        out.append(check("paths", FAIL, "the paths were not probed", None, config["paths"],
                         "path_missing"))
    return out


def check_commands(facts, config):
    """commands: one check per required command."""
    if not config["commands"]:
        return [check("commands", PASS, "no commands required", None, [])]
    out = []
    for result in facts.get("commands") or []:
        command = result["command"]
        value = {"exit_code": result.get("exit_code"), "output": result.get("output"),
                 "seconds": result.get("seconds")}
        if result.get("error"):
            code = "command_not_found" if result.get("not_found") else "command_failed"
            out.append(check("commands", FAIL, "%s could not start: %s" % (command, result["error"]),
                             value, command, code))
        elif result.get("timed_out"):
            out.append(check("commands", FAIL, "%s did not finish within %ss"
                             % (command, config["timeout_s"]), value, command, "command_timeout"))
        elif result.get("exit_code") != 0:
            out.append(check("commands", FAIL, "%s exited with %s" % (command, result["exit_code"]),
                             value, command, "command_failed"))
        else:
            out.append(check("commands", PASS, "%s exited with 0" % command, value, command))
    if len(out) < len(config["commands"]):
        out.append(check("commands", FAIL, "the commands were not run", None,
                         sorted(config["commands"]), "command_failed"))
    return out


def check_tools(facts, config):
    """tools: one check per required tool."""
    if not config["tools"]:
        return [check("tools", PASS, "no tools required", None, [])]
    out = []
    for result in facts.get("tools") or []:
        tool = result["tool"]
        value = {"path": result.get("path"), "exit_code": result.get("exit_code"),
                 "output": result.get("output"), "seconds": result.get("seconds")}
        if result.get("not_found"):
            out.append(check("tools", FAIL, "%s: %s" % (tool, result.get("error")), value, tool,
                             "tool_not_found"))
        elif result.get("error"):
            out.append(check("tools", FAIL, "%s could not start: %s" % (tool, result["error"]),
                             value, tool, "tool_failed"))
        elif result.get("timed_out"):
            out.append(check("tools", FAIL, "%s --version did not finish within %ss"
                             % (tool, config["timeout_s"]), value, tool, "tool_timeout"))
        elif result.get("exit_code") != 0:
            out.append(check("tools", FAIL, "%s --version exited with %s"
                             % (tool, result["exit_code"]), value, tool, "tool_failed"))
        else:
            first = (result.get("output") or [""])[0]
            out.append(check("tools", PASS, "%s (%s)%s" % (tool, result.get("path"),
                                                          ": " + first if first else ""),
                             value, tool))
    if len(out) < len(config["tools"]):
        out.append(check("tools", FAIL, "the tools were not looked for", None, config["tools"],
                         "tool_not_found"))
    return out


def check_reach(facts, config):
    """reach: one check per required endpoint."""
    if not config["reach"]:
        return [check("reach", PASS, "no endpoints required", None, [])]
    out = []
    for result in facts.get("reach") or []:
        where = "%s (%s:%s)" % (result["name"], result["host"], result["port"])
        value = {"connected": result.get("connected"), "seconds": result.get("seconds")}
        if result.get("connected"):
            out.append(check("reach", PASS, "%s: connected in %s s" % (where, result["seconds"]),
                             value, result["name"]))
        else:
            out.append(check("reach", FAIL, "%s: cannot connect: %s" % (where, result.get("error")),
                             value, result["name"], "reach_failed"))
    if len(out) < len(config["reach"]):
        out.append(check("reach", FAIL, "the endpoints were not tried", None,
                         [e["name"] for e in config["reach"]], "reach_failed"))
    return out


def check_portal(facts, config):
    """portal_access: the pilot got an HTTP answer (any status) from the portal."""
    portal = _group(facts, "portal")
    url = portal.get("url")
    if not url:
        return check("portal_access", WARN, "no ping_url or report_url configured", None, None,
                     "portal_not_configured")
    if portal.get("http_status") is None:
        return check("portal_access", FAIL, "cannot reach %s: %s" % (url, portal.get("error")),
                     None, url, "portal_unreachable")
    return check("portal_access", PASS, "%s answered HTTP %s in %s s"
                 % (url, portal["http_status"], portal.get("rtt_s")), portal["http_status"], url)


def _smallest(*values):
    known = [v for v in values if v is not None]
    return min(known) if known else None


def evaluate(facts, config, problems=()):
    """Judge ``facts`` against ``config`` (already normalized): the report's ``checks`` list.

    Pure: it reads the facts dict only, so the portal can re-judge a stored report against
    changed requirements without running a new pilot.
    """
    checks = []
    if problems:
        checks.append(check("config", FAIL, "; ".join(problems), None, None, "config_invalid"))
    cpu, memory, disk = _group(facts, "cpu"), _group(facts, "memory"), _group(facts, "disk")
    batch = _group(facts, "batch")
    checks.append(check_python(facts, config))
    # A job may use what the node has, its affinity mask and cgroup allow, and the batch
    # system granted: the smallest of those that are known.
    cores = _smallest(cpu.get("usable_cores"), batch.get("allocated_cores"))
    checks.append(check_minimum("cores", cores, config["min_cores"], "",
                                "cores_too_few", "cores_unknown", "cores for this job"))
    memory_mb = _smallest(memory.get("job_limit_mb"), batch.get("allocated_memory_mb"))
    checks.append(check_minimum("memory", memory_mb, config["min_memory_mb"], "MB",
                                "memory_too_low", "memory_unknown", "memory for this job"))
    work, tmp = disk.get("work") or {}, disk.get("tmp") or {}
    checks.append(check_minimum("work_disk", work.get("free_gb"), config["min_work_disk_gb"], "GB",
                                "disk_too_small", "disk_unknown",
                                "free space in %s" % work.get("path", "the work directory")))
    checks.append(check_minimum("tmp_disk", tmp.get("free_gb"), config["min_tmp_disk_gb"], "GB",
                                "disk_too_small", "disk_unknown",
                                "free space in %s" % tmp.get("path", "/tmp")))
    checks.append(check_credential(facts, config))
    checks.extend(check_cvmfs(facts, config))
    checks.extend(check_paths(facts, config))
    checks.extend(check_tools(facts, config))
    checks.extend(check_commands(facts, config))
    checks.extend(check_reach(facts, config))
    checks.append(check_portal(facts, config))
    return checks


def verdict_of(checks):
    """``passed``, ``warning`` or ``failed``: the worst status among ``checks``."""
    worst = PASS
    for item in checks:
        if _SEVERITY.get(item["status"], 2) > _SEVERITY[worst]:
            worst = item["status"] if item["status"] in _SEVERITY else FAIL
    return VERDICTS[worst]


# ---------------------------------------------------------------- report


def build_report(config, problems, workdir):
    """Gather facts, run the checks and assemble the report dict."""
    started = utc_now()
    facts = gather_facts(config, workdir)
    checks = evaluate(facts, config, problems)
    return {
        "pilot_version": PILOT_VERSION,
        "started_at": iso(started),
        "finished_at": iso(utc_now()),
        "facts": facts,
        "checks": checks,
        "verdict": verdict_of(checks),
    }


def format_report(report):
    """The report between the marker lines, as it appears in the batch output file."""
    return "%s\n%s\n%s\n" % (BEGIN_MARKER, json.dumps(report, indent=2, sort_keys=True), END_MARKER)


def extract_report_text(text):
    """The JSON text of the last complete report in a batch output file's ``text``, or None."""
    end = text.rfind(END_MARKER)
    if end < 0:
        return None
    begin = text.rfind(BEGIN_MARKER, 0, end)
    if begin < 0:
        return None
    return text[begin + len(BEGIN_MARKER):end]


def extract_report(text):
    """The last complete report in a batch output file's ``text``, or None."""
    found = extract_report_text(text)
    if found is None:
        return None
    try:
        report = json.loads(found)
    except (ValueError, RecursionError):
        return None
    return report if isinstance(report, dict) else None


def post_report(report, config):
    """POST the report; retry network errors and 5xx with backoff, never 4xx.

    Returns ``(exit_code, message)``.
    """
    body = json.dumps(report).encode("utf-8")
    url = config["report_url"]
    deadline = time.time() + config["report_max_s"]
    delay = config["report_backoff_s"]
    attempt = 0
    while True:
        attempt += 1
        timeout = max(1.0, min(config["timeout_s"], deadline - time.time()))
        status, _, answer, error = http_request(url, config["token"], timeout, data=body)
        answer_text = answer.decode("utf-8", "replace").strip()[:500]
        if status is not None and status < 300:
            return EXIT_REPORTED, "report accepted by %s (HTTP %s, attempt %d)%s" % (
                url, status, attempt, (": " + answer_text) if answer_text else "")
        if status is not None and 400 <= status < 500:
            return EXIT_REJECTED, "the portal refused the report: HTTP %s %s" % (status, answer_text)
        problem = error if status is None else "HTTP %s %s" % (status, answer_text)
        if attempt >= config["report_tries"] or time.time() + delay > deadline:
            return EXIT_UNDELIVERED, "report not delivered after %d attempt(s): %s" % (attempt, problem)
        log("attempt %d to report failed (%s); retrying in %.1f s" % (attempt, problem, delay))
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def main(argv=None):
    """Command-line entry: gather, judge, print, post. Returns the process exit code."""
    parser = argparse.ArgumentParser(description="DSS pilot: check this worker node and report.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="JSON configuration file")
    source.add_argument("--config-json", metavar="JSON", help="JSON configuration as a string")
    parser.add_argument("--workdir", default=None, help="work directory (default: current)")
    parser.add_argument("--dry-run", action="store_true", help="print the report, do not post it")
    parser.add_argument("--version", action="version", version="dss-pilot " + PILOT_VERSION)
    args = parser.parse_args(argv)

    config, problems = load_config(args.config, args.config_json)
    if not args.dry_run and not config["report_url"] and not any(
            p.startswith(("report_url:", "cannot read")) for p in problems):
        problems.append("report_url: required (or use --dry-run)")
    try:
        workdir = os.path.abspath(args.workdir or os.getcwd())
    except OSError as exc:
        workdir = os.environ.get("HOME") or "/"
        problems.append("cannot find the current directory (%s); using %s" % (describe(exc), workdir))

    report = build_report(config, problems, workdir)
    # Print first: if the POST hangs until the wall-time limit, the output file still has it.
    sys.stdout.write(format_report(report))
    sys.stdout.flush()
    if args.dry_run:
        return EXIT_REPORTED
    if not config["report_url"]:
        log("no usable report_url: the report is only in this output")
        return EXIT_BAD_CONFIG
    code, message = post_report(report, config)
    log(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
