"""Batch-system adapters: how DSS submits a pilot to a site's batch system and follows it.

Plain Python (no Django import): the pilot tasks call an adapter with a script, a work
directory and the site's parameters, keep the returned job id, and poll ``status`` until the
job is final. Every adapter speaks the same small interface, :class:`BatchAdapter`, so adding
HTCondor-CE (``condor_submit -remote`` / ``condor_q`` / ``condor_history`` / ``condor_rm``) or
SSH (the same commands run through ``ssh host --``) means one subclass and one
``@register_adapter``.

Safety: site parameters come from a web form, so every value is checked against a strict
pattern in ``validate_params`` and every command is run as an argv list, never through a
shell. Jobs get a clean environment (``env_passthrough`` plus the site's ``env``), not the
portal's, which holds database passwords and the secret key.
"""

from __future__ import annotations

import abc
import json
import os
import pwd
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dss.errors import DSSError, InvalidInput

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
UNKNOWN = "unknown"
STATES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, UNKNOWN)
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT})

# What a job sees of the submitting process's environment (plus the site's own ``env``).
DEFAULT_ENV_PASSTHROUGH = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SLURM_CONF",
    "X509_USER_PROXY",
    "X509_CERT_DIR",
    "BEARER_TOKEN_FILE",
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_LIST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(,[A-Za-z0-9][A-Za-z0-9_.-]{0,63})*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Variables that make the dynamic loader or an interpreter load code of the site's choosing.
ENV_DENIED_RE = re.compile(r"^(LD_|DYLD_|PYTHON|PERL5|RUBY|BASH_ENV$|ENV$|SHELLOPTS$|IFS$)")
# What a local job sees of this process's environment: nothing secret (see LocalAdapter).
LOCAL_ENV_PASSTHROUGH = ("PATH", "HOME", "LANG")
WALLTIME_RE = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")
EXTRA_RE = re.compile(r"^--([a-z][a-z-]*)=([A-Za-z0-9_.,:+@%/\[\]&|=-]{1,200})$")
MAX_WALLTIME_S = 30 * 24 * 3600

# sbatch options a site may add as ``--key=value``: resources and placement only. Options
# that change who runs the job, where its files go or what it runs (--uid, --output,
# --chdir, --wrap, --export, --get-user-env, --container) are never accepted.
SLURM_EXTRA_ALLOWED = frozenset(
    {
        "qos",
        "reservation",
        "constraint",
        "mem",
        "mem-per-cpu",
        "cpus-per-task",
        "ntasks",
        "nodes",
        "gres",
        "gpus",
        "exclude",
        "nodelist",
        "tmp",
        "licenses",
        "clusters",
        "comment",
        "nice",
        "exclusive",
    }
)


class BatchError(DSSError):
    """The batch system failed or refused an operation; ``transient`` ones may be retried."""

    code = "batch_error"
    exit_code = 8

    def __init__(
        self, message: str, *, where: str = "", code: str | None = None, transient: bool = False
    ):
        super().__init__(message, where=where, code=code)
        self.transient = transient


@dataclass(frozen=True)
class BatchStatus:
    """What the batch system says about one job.

    ``state`` is one of :data:`STATES`; ``raw`` is the batch system's own word for it
    (``PENDING``, ``COMPLETED``); ``exit_code`` is the job script's exit code when known;
    ``reason`` explains a wait or a failure in the batch system's words.
    """

    state: str
    raw: str = ""
    exit_code: int | None = None
    reason: str = ""

    @property
    def final(self) -> bool:
        """True when the job will not change state any more."""
        return self.state in FINAL_STATES


# ---------------------------------------------------------------- parameter checks


def parse_walltime(value: Any, *, field: str = "time_limit") -> int:
    """A wall time as seconds: minutes (``90`` or ``"90"``), ``"HH:MM:SS"`` or ``"D-HH:MM:SS"``."""
    if isinstance(value, bool):
        raise InvalidInput("must be minutes or HH:MM:SS", where=field)
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        seconds = int(value) * 60
    elif isinstance(value, str) and (match := WALLTIME_RE.match(value.strip())):
        days, hours, minutes, secs = (int(g or 0) for g in match.groups())
        if minutes >= 60 or secs >= 60:
            raise InvalidInput(f"{value!r}: minutes and seconds must be below 60", where=field)
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise InvalidInput(f"{value!r} is not minutes, HH:MM:SS or D-HH:MM:SS", where=field)
    if not 0 < seconds <= MAX_WALLTIME_S:
        raise InvalidInput(f"{value!r} must be more than 0 and at most 30 days", where=field)
    return seconds


def format_walltime(seconds: int) -> str:
    """Seconds as Slurm's ``D-HH:MM:SS`` (or ``HH:MM:SS`` under a day)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def _check_name(params: Mapping[str, Any], field: str, pattern: re.Pattern = NAME_RE) -> str | None:
    value = params.get(field)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidInput(
            f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; up to 64 characters)",
            where=field,
        )
    return value


def _check_env(params: Mapping[str, Any]) -> dict[str, str]:
    env = params.get("env") or {}
    if not isinstance(env, Mapping):
        raise InvalidInput("must be a mapping of variable names to strings", where="env")
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME_RE.match(name):
            raise InvalidInput(f"{name!r} is not a valid variable name", where="env")
        if ENV_DENIED_RE.match(name):
            raise InvalidInput(
                f"{name} would change what programs the job loads or runs; it cannot be set",
                where="env",
            )
        if not isinstance(value, str) or "\0" in value:
            raise InvalidInput(f"{name}: the value must be a string without NUL bytes", where="env")
    return dict(env)


def _check_args(params: Mapping[str, Any]) -> list[str]:
    args = params.get("args") or []
    if not isinstance(args, list | tuple) or not all(
        isinstance(a, str) and "\0" not in a for a in args
    ):
        raise InvalidInput("must be a list of strings", where="args")
    return list(args)


def _check_script(script_path: str | os.PathLike) -> Path:
    path = Path(script_path)
    if not path.is_absolute():
        raise InvalidInput(f"{path} must be an absolute path", where="script_path")
    try:
        with path.open("rb") as handle:
            first = handle.readline(256)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {path}: {exc.strerror or exc}", where="script_path"
        ) from exc
    if not first.startswith(b"#!"):
        raise InvalidInput(
            f"{path} must start with a #! line naming its interpreter", where="script_path"
        )
    return path


def _check_workdir(workdir: str | os.PathLike) -> Path:
    path = Path(workdir)
    # '%' would be read as a file-name pattern by sbatch (-o dss-%j.out), a newline breaks logs.
    if not path.is_absolute() or "%" in str(path) or "\n" in str(path):
        raise InvalidInput(
            f"{path} must be an absolute path without '%' or newlines", where="workdir"
        )
    if not path.is_dir():
        raise InvalidInput(f"{path} is not a directory", where="workdir")
    return path


def _pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    # The state letter follows the parenthesised command name, which may itself hold ')'.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pid_runs_job(pid: int, job_id: str) -> bool:
    """True when ``pid`` is alive and belongs to ``job_id`` (pids are reused after exit)."""
    if not _pid_alive(pid):
        return False
    for name in ("cmdline", "environ"):
        try:
            if job_id.encode() in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            continue
    return False


def _check_reachable(workdir: Path, uid: int, gid: int, user: str) -> None:
    """BatchError unless user ``uid``/``gid`` may enter ``workdir`` and every directory above."""
    for folder in [workdir, *workdir.parents]:
        st = folder.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            raise BatchError(
                f"{folder} (mode {stat.S_IMODE(st.st_mode):o}) is closed to {user}, who runs "
                f"the job: choose a work directory ({workdir}) that every user can enter "
                "(PILOT_DIR)",
                where="workdir",
            )


# ---------------------------------------------------------------- the interface


class BatchAdapter(abc.ABC):
    """One batch system, as the PilotChecker uses it.

    A subclass sets ``name`` (the value stored on a Site) and ``param_fields`` (the site
    parameters it understands, so a form can show only those), and implements ``submit``,
    ``status`` and ``cancel``. Contract:

    - ``validate_params(params)`` returns the parameters normalized, or raises
      :class:`~dss.errors.InvalidInput` whose ``where`` names the bad field. ``submit``
      calls it again: callers never get to skip it.
    - ``submit(script_path, workdir, params)`` starts ``script_path`` (absolute, with a
      ``#!`` line) in ``workdir``, with the job's stdout and stderr at ``output_paths``,
      and returns the job id as a string. It raises :class:`BatchError` when the batch
      system refuses (``transient=True`` when a retry may help, e.g. controller down).
    - ``status(job_ids)`` returns a :class:`BatchStatus` for every id asked about, ``unknown``
      when the batch system has no record of it; it raises ``BatchError(transient=True)``
      when it cannot ask at all, so a poller does not mistake an outage for lost jobs.
    - ``cancel(job_id)`` asks the batch system to stop the job; cancelling a finished job
      is not an error.
    """

    name: ClassVar[str]
    param_fields: ClassVar[frozenset[str]] = frozenset({"job_name", "time_limit", "env", "args"})

    def __init__(
        self,
        *,
        env_passthrough: Iterable[str] = DEFAULT_ENV_PASSTHROUGH,
        command_timeout: float = 30.0,
    ) -> None:
        """``env_passthrough``: variables a job inherits from this process;
        ``command_timeout``: limit in seconds on each batch command (sbatch, squeue...)."""
        self.env_passthrough = tuple(env_passthrough)
        self.command_timeout = command_timeout

    def validate_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check the site's parameters; return them normalized (``time_limit`` in seconds)."""
        params = dict(params or {})
        unknown = sorted(set(params) - self.param_fields)
        if unknown:
            raise InvalidInput(
                f"not a parameter of the {self.name} batch system "
                f"(known: {', '.join(sorted(self.param_fields))})",
                where=unknown[0],
            )
        clean: dict[str, Any] = {
            "job_name": _check_name(params, "job_name") or "dss-pilot",
            "time_limit": None,
            "env": _check_env(params),
            "args": _check_args(params),
        }
        if params.get("time_limit") not in (None, ""):
            clean["time_limit"] = parse_walltime(params["time_limit"])
        return clean

    @abc.abstractmethod
    def submit(
        self, script_path: str | os.PathLike, workdir: str | os.PathLike, params: Mapping[str, Any]
    ) -> str:
        """Start the script as a batch job; return its job id."""

    @abc.abstractmethod
    def status(self, job_ids: Iterable[str]) -> dict[str, BatchStatus]:
        """The state of each job in ``job_ids``."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop the job (no error if it already finished)."""

    def output_paths(self, job_id: str, workdir: str | os.PathLike) -> tuple[Path, Path]:
        """Where the job's stdout and stderr are written: ``<workdir>/dss-<job_id>.out|.err``."""
        base = Path(workdir) / f"dss-{job_id}"
        return base.with_suffix(".out"), base.with_suffix(".err")

    def job_environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The environment a job starts with: the passthrough variables plus ``extra``."""
        env = {k: os.environ[k] for k in self.env_passthrough if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(extra)
        return env

    def _run(
        self, argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        """Run a batch command; a hang or a missing command becomes a BatchError."""
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.command_timeout,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise BatchError(
                f"{shlex.join(argv[:2])} did not answer within {self.command_timeout:g} s",
                where=self.name,
                transient=True,
            ) from exc
        except FileNotFoundError as exc:
            raise BatchError(f"{argv[0]} is not installed here", where=self.name) from exc


_ADAPTERS: dict[str, type[BatchAdapter]] = {}


def register_adapter(cls: type[BatchAdapter]) -> type[BatchAdapter]:
    """Class decorator: make ``cls`` available to :func:`get_adapter` under ``cls.name``."""
    _ADAPTERS[cls.name] = cls
    return cls


def adapter_names() -> list[str]:
    """The registered batch systems, for a Site form's choices."""
    return sorted(_ADAPTERS)


def get_adapter(name: str, **options: Any) -> BatchAdapter:
    """A new adapter for batch system ``name`` (``local``, ``slurm``); options go to its constructor."""
    try:
        cls = _ADAPTERS[name]
    except KeyError:
        raise InvalidInput(
            f"unknown batch system {name!r} (known: {', '.join(adapter_names())})",
            where="batch_system",
        ) from None
    return cls(**options)


# ---------------------------------------------------------------- local processes

# Runs detached beside each local job: starts it in its own session, forwards a cancel to
# its process group, enforces the time limit, and records the outcome in the state file,
# so status works from any process, even after the submitting worker restarted.
_LOCAL_SUPERVISOR = r"""
import json, os, signal, subprocess, sys, time
state_path, job_id, workdir, out_path, err_path, limit, uid, gid = sys.argv[1:9]
argv = sys.argv[9:]
limit = float(limit)
# As root, the job runs as another user, with no supplementary groups.
as_user = {} if uid == "-" else {"user": int(uid), "group": int(gid), "extra_groups": []}
stopping = []
child = None

def write(state, **extra):
    data = {"job_id": job_id, "state": state, "supervisor_pid": os.getpid(), "updated_at": time.time()}
    data.update(extra)
    tmp = state_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, state_path)

def signal_child(sig):
    if child is not None:
        try:
            os.killpg(child.pid, sig)
        except OSError:
            pass

def on_term(signum, frame):
    if not stopping:
        stopping.append(("cancelled", time.time()))
    signal_child(signal.SIGTERM)

signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
with open(out_path, "ab") as out, open(err_path, "ab") as err:
    try:
        child = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, start_new_session=True, **as_user)
    except OSError as exc:
        err.write(("dss local batch: cannot start %s: %s\n" % (argv[0], exc)).encode())
        write("failed", exit_code=None, reason="cannot start: %s" % exc, finished_at=time.time())
        sys.exit(0)
    write("running", child_pid=child.pid, started_at=time.time())
    if stopping:
        signal_child(signal.SIGTERM)
    deadline = time.time() + limit if limit > 0 else None
    while True:
        try:
            rc = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        if deadline is not None and now >= deadline and not stopping:
            stopping.append(("timeout", now))
            signal_child(signal.SIGTERM)
        if stopping and now - stopping[0][1] > 5:
            signal_child(signal.SIGKILL)
if stopping:
    state = stopping[0][0]
else:
    state = "completed" if rc == 0 else "failed"
reason = "killed by signal %d" % -rc if rc < 0 else ""
write(state, exit_code=rc if rc >= 0 else 128 - rc, reason=reason, finished_at=time.time(),
      child_pid=child.pid)
"""

LOCAL_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# How long a just-submitted local job may take to show itself as ours in /proc.
LOCAL_START_GRACE_S = 60.0


@register_adapter
class LocalAdapter(BatchAdapter):
    """Jobs as detached processes on this machine: the embedded default and the test double.

    Job ids are random hex strings. Each job has a small supervisor process (its own
    session) and a JSON state file ``<state_dir>/<job_id>.json`` that the supervisor
    rewrites as the job starts and ends (``exit_code``, ``reason``); ``status`` reads that
    file and checks that the supervisor is alive. ``cancel`` sends SIGTERM to the
    supervisor, which passes it to the job's process group and SIGKILLs it 5 s later.
    ``time_limit`` is enforced the same way and ends in state ``timeout``. The job sees
    ``DSS_LOCAL_JOB_ID``, which the pilot reports as its batch job id.

    A local job runs on the portal's own machine, beside processes that hold its secrets, so
    it starts with a clean environment (``PATH``, ``HOME``, ``LANG`` and its own variables)
    and, when this process is root, as the unprivileged user ``run_as``: it can then neither
    read the portal's files nor its processes' ``/proc/<pid>/environ``. The files directly in
    the work directory (the script, its configuration) are handed to that user; the directory
    stays ours, so the job cannot replace its log files with links to other files. Without
    ``run_as``, root refuses to start a job; not being root, the job runs as this process's
    user, which ``own_user_ok=False`` refuses (a production portal's user can read its
    secrets).
    """

    name = "local"

    def __init__(
        self,
        *,
        state_dir: str | os.PathLike | None = None,
        run_as: str | None = None,
        own_user_ok: bool = True,
        env_passthrough: Iterable[str] = LOCAL_ENV_PASSTHROUGH,
        **options: Any,
    ) -> None:
        """``state_dir``: where the job state files live (default ``<tmp>/dss-local-jobs``);
        ``run_as``: the user jobs run as when this process is root; ``own_user_ok``: whether
        a process that is not root may run jobs as itself."""
        super().__init__(env_passthrough=env_passthrough, **options)
        self.state_dir = Path(state_dir or Path(tempfile.gettempdir()) / "dss-local-jobs")
        self.run_as = run_as
        self.own_user_ok = own_user_ok

    def _job_user(self) -> tuple[int, int] | None:
        """(uid, gid) to switch to, or None to run as this process's user."""
        if os.geteuid() != 0:
            if not self.own_user_ok:
                raise BatchError(
                    "local jobs would run as the portal's own user, who can read its secrets: "
                    "run the worker as root (jobs then run as DSS_PILOT_USER) or send pilots "
                    "to a batch system",
                    where=self.name,
                )
            return None
        if not self.run_as:
            raise BatchError("refusing to run a local job as root: name a user", where=self.name)
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise BatchError(
                f"no user {self.run_as!r} on this machine to run local jobs as (DSS_PILOT_USER)",
                where=self.name,
            ) from None
        if entry.pw_uid == 0:
            raise BatchError(f"{self.run_as!r} is root; name an unprivileged user", where=self.name)
        return entry.pw_uid, entry.pw_gid

    def _paths(self, job_id: str) -> tuple[Path, Path, Path]:
        if not isinstance(job_id, str) or not LOCAL_JOB_ID_RE.match(job_id):
            raise InvalidInput(f"{job_id!r} is not a local job id", where="job_id")
        base = self.state_dir / job_id
        return base.with_suffix(".json"), base.with_suffix(".pid"), base.with_suffix(".cancel")

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Written by os.replace, so a partial file is not expected; treat it as "no news".
            return {"state": QUEUED}

    def submit(
        self, script_path: str | os.PathLike, workdir: str | os.PathLike, params: Mapping[str, Any]
    ) -> str:
        """Start the script under a detached supervisor; the job id is a random hex string."""
        clean = self.validate_params(params)
        script = _check_script(script_path)
        workdir = _check_workdir(workdir)
        job_user = self._job_user()
        if os.access(script, os.X_OK):
            argv = [str(script)]
        else:
            # Run it the way the kernel would, without needing the executable bit.
            shebang = script.open("rb").readline(256)[2:].decode(errors="replace").split()
            argv = [*shebang, str(script)]
        argv += clean["args"]
        if job_user is not None:
            _check_reachable(workdir, *job_user, self.run_as)
            for item in workdir.iterdir():
                if item.is_file() and not item.is_symlink():
                    os.chown(item, *job_user)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        job_id = uuid.uuid4().hex
        state_path, pid_path, _ = self._paths(job_id)
        out, err = self.output_paths(job_id, workdir)
        state_path.write_text(
            json.dumps({"job_id": job_id, "state": QUEUED, "submitted_at": time.time()})
        )
        extra = {**clean["env"], "DSS_LOCAL_JOB_ID": job_id}
        if job_user is not None:
            extra.setdefault("HOME", str(workdir))
        env = self.job_environment(extra)
        limit = str(clean["time_limit"] or 0)
        uid, gid = (str(job_user[0]), str(job_user[1])) if job_user else ("-", "-")
        with open(err, "ab") as supervisor_err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _LOCAL_SUPERVISOR,
                    str(state_path),
                    job_id,
                    str(workdir),
                    str(out),
                    str(err),
                    limit,
                    uid,
                    gid,
                    *argv,
                ],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=supervisor_err,
                start_new_session=True,
            )
        pid_path.write_text(str(proc.pid))
        return job_id

    def _status_one(self, job_id: str) -> BatchStatus:
        state_path, pid_path, cancel_path = self._paths(job_id)
        data = self._read_state(state_path)
        if data is None:
            return BatchStatus(UNKNOWN, reason=f"no state file {state_path}")
        state = data.get("state", UNKNOWN)
        if state in FINAL_STATES:
            return BatchStatus(state, state, data.get("exit_code"), data.get("reason", ""))
        pid = data.get("supervisor_pid")
        if pid is None:
            try:
                pid = int(pid_path.read_text())
            except (OSError, ValueError):
                return BatchStatus(QUEUED, QUEUED, reason="starting")
        if _pid_runs_job(pid, job_id):
            return BatchStatus(state, state)
        # A supervisor that was started a moment ago may still be inside exec, its command
        # line not yet readable: while it has not written its own pid, it is starting.
        if (
            data.get("supervisor_pid") is None
            and _pid_alive(pid)
            and time.time() - float(data.get("submitted_at") or 0) < LOCAL_START_GRACE_S
        ):
            return BatchStatus(QUEUED, QUEUED, reason="starting")
        # The supervisor may have written its last word just now.
        data = self._read_state(state_path) or {}
        if data.get("state") in FINAL_STATES:
            return BatchStatus(
                data["state"], data["state"], data.get("exit_code"), data.get("reason", "")
            )
        if cancel_path.exists():
            return BatchStatus(CANCELLED, CANCELLED, reason="cancelled; the supervisor is gone")
        return BatchStatus(
            FAILED, state, reason="the job's supervisor died without recording an outcome"
        )

    def status(self, job_ids: Iterable[str]) -> dict[str, BatchStatus]:
        """Each job's state from its state file and whether its supervisor still runs."""
        return {job_id: self._status_one(job_id) for job_id in job_ids}

    def cancel(self, job_id: str) -> None:
        """SIGTERM the supervisor's process group; it stops the job and records ``cancelled``."""
        state_path, pid_path, cancel_path = self._paths(job_id)
        data = self._read_state(state_path)
        if data is None:
            raise InvalidInput(f"no local job {job_id}", where="job_id")
        if data.get("state") in FINAL_STATES:
            return
        cancel_path.touch()
        pids = [data.get("supervisor_pid")]
        try:
            pids.append(int(pid_path.read_text()))
        except (OSError, ValueError):
            pass
        for pid in {p for p in pids if p}:
            if _pid_runs_job(pid, job_id):
                os.killpg(pid, signal.SIGTERM)
                return
        # Supervisor gone (killed hard): stop an orphaned job directly, if it is still ours.
        child = data.get("child_pid")
        if child and _pid_runs_job(child, job_id):
            os.killpg(child, signal.SIGKILL)


# ---------------------------------------------------------------- Slurm

SLURM_STATES = {
    "PENDING": QUEUED,
    "REQUEUED": QUEUED,
    "REQUEUE_HOLD": QUEUED,
    "REQUEUE_FED": QUEUED,
    "RESV_DEL_HOLD": QUEUED,
    "CONFIGURING": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "SUSPENDED": RUNNING,
    "STOPPED": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "RESIZING": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "NODE_FAIL": FAILED,
    "BOOT_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED,
    "DEADLINE": FAILED,
    "PREEMPTED": FAILED,
    "REVOKED": FAILED,
    "SPECIAL_EXIT": FAILED,
    "CANCELLED": CANCELLED,
    "TIMEOUT": TIMEOUT,
}
SLURM_JOB_ID_RE = re.compile(r"^\d+(_\d+)?$")
# Messages after which trying again later may work (controller restarting, overloaded).
SLURM_TRANSIENT_RE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Resource temporarily unavailable|"
    r"Slurm temporarily unable|Connection refused|Zero Bytes were transmitted",
    re.IGNORECASE,
)


def _slurm_state(raw: str) -> str:
    # sacct writes "CANCELLED by 0"; squeue/scontrol may append '+' to requeued states.
    return SLURM_STATES.get(raw.split()[0].rstrip("+") if raw else "", UNKNOWN)


def _slurm_exit(text: str) -> tuple[int | None, str]:
    """``ExitCode=1:0`` -> (1, ""); ``0:9`` -> (137, "killed by signal 9")."""
    match = re.search(r"(\d+):(\d+)", text)
    if not match:
        return None, ""
    code, sig = int(match.group(1)), int(match.group(2))
    if sig:
        return 128 + sig, f"killed by signal {sig}"
    return code, ""


@register_adapter
class SlurmAdapter(BatchAdapter):
    """Slurm through its command-line tools (sbatch, squeue, scontrol, sacct, scancel).

    Parameters beyond the common ones: ``partition`` and ``account`` (names, or a
    comma-separated list for partitions) and ``extra``, a list of ``--key=value`` sbatch
    options from :data:`SLURM_EXTRA_ALLOWED`. ``status`` asks squeue (all states, so jobs
    that finished within MinJobAge still answer), reads exit codes with ``scontrol show
    job``, and for jobs the controller has forgotten falls back to sacct when accounting is
    configured, else to the jobcomp/filetxt log. ``SLURM_CONF`` reaches every command from
    the environment unless the adapter is given its own ``slurm_conf``.
    """

    name = "slurm"
    param_fields = BatchAdapter.param_fields | {"partition", "account", "extra"}

    def __init__(self, *, slurm_conf: str | os.PathLike | None = None, **options: Any) -> None:
        """``slurm_conf``: the cluster's slurm.conf, when it is not this machine's default."""
        super().__init__(**options)
        self.slurm_conf = str(slurm_conf) if slurm_conf else None
        self._config: dict[str, str] | None = None

    def validate_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The common checks, plus partition, account and the allowed extra directives."""
        params = dict(params or {})
        clean = super().validate_params(params)
        clean["partition"] = _check_name(params, "partition", NAME_LIST_RE)
        clean["account"] = _check_name(params, "account")
        extra = params.get("extra") or []
        if isinstance(extra, str):
            extra = extra.split()
        if not isinstance(extra, list | tuple):
            raise InvalidInput("must be a list of --key=value options", where="extra")
        clean["extra"] = []
        for option in extra:
            match = EXTRA_RE.match(option) if isinstance(option, str) else None
            if not match:
                raise InvalidInput(
                    f"{option!r} is not --key=value (letters, digits and _.,:+@%/[]&|=- in the value)",
                    where="extra",
                )
            if match.group(1) not in SLURM_EXTRA_ALLOWED:
                raise InvalidInput(
                    f"--{match.group(1)} is not allowed (allowed: {', '.join(sorted(SLURM_EXTRA_ALLOWED))})",
                    where="extra",
                )
            clean["extra"].append(option)
        return clean

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = self.job_environment(extra or {})
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    def _command(self, argv: list[str]) -> subprocess.CompletedProcess:
        return self._run(argv, env=self._env())

    def _failure(self, argv: list[str], proc: subprocess.CompletedProcess) -> BatchError:
        message = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
        return BatchError(
            f"{argv[0]} failed: {message}",
            where=self.name,
            transient=bool(SLURM_TRANSIENT_RE.search(message)),
        )

    def submit(
        self, script_path: str | os.PathLike, workdir: str | os.PathLike, params: Mapping[str, Any]
    ) -> str:
        """``sbatch --parsable`` with every option as its own argv word; returns the job id."""
        clean = self.validate_params(params)
        script = _check_script(script_path)
        workdir = _check_workdir(workdir)
        out, err = self.output_paths("%j", workdir)
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={clean['job_name']}",
            f"--output={out}",
            f"--error={err}",
            f"--chdir={workdir}",
        ]
        if clean["time_limit"]:
            argv.append(f"--time={format_walltime(clean['time_limit'])}")
        if clean["partition"]:
            argv.append(f"--partition={clean['partition']}")
        if clean["account"]:
            argv.append(f"--account={clean['account']}")
        argv += clean["extra"]
        argv += [str(script), *clean["args"]]
        # cwd: the job's SLURM_SUBMIT_DIR is then its work directory, not the portal's.
        proc = self._run(argv, env=self._env(clean["env"]), cwd=workdir)
        if proc.returncode != 0:
            raise self._failure(argv, proc)
        # --parsable prints "jobid" or "jobid;cluster"
        job_id = proc.stdout.strip().splitlines()[-1].split(";")[0] if proc.stdout.strip() else ""
        if not SLURM_JOB_ID_RE.match(job_id):
            raise BatchError(f"sbatch printed no job id: {proc.stdout.strip()!r}", where=self.name)
        return job_id

    def _check_ids(self, job_ids: Iterable[str]) -> list[str]:
        ids = list(dict.fromkeys(job_ids))
        for job_id in ids:
            if not isinstance(job_id, str) or not SLURM_JOB_ID_RE.match(job_id):
                raise InvalidInput(f"{job_id!r} is not a Slurm job id", where="job_id")
        return ids

    def _slurm_config(self) -> dict[str, str]:
        """``scontrol show config`` as a dict (asked once per adapter)."""
        if self._config is None:
            proc = self._command(["scontrol", "show", "config"])
            self._config = {}
            for line in proc.stdout.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    self._config[key.strip()] = value.strip()
        return self._config

    def _from_squeue(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        argv = ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T %r"]
        proc = self._command(argv)
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:
                # Every id has left the controller's memory: the fallbacks will say more.
                return {}
            raise self._failure(argv, proc)
        found = {}
        for line in proc.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2:
                found[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
        return found

    def _from_scontrol(self, job_id: str) -> BatchStatus | None:
        proc = self._command(["scontrol", "-o", "show", "job", job_id])
        if proc.returncode != 0:
            return None
        line = proc.stdout.strip()
        state = re.search(r"\bJobState=(\S+)", line)
        if not state:
            return None
        exit_code, why = _slurm_exit((re.search(r"\bExitCode=(\S+)", line) or [None, ""])[1])
        reason = (re.search(r"\bReason=(\S+)", line) or [None, ""])[1]
        reason = why or ("" if reason in ("None", "(null)") else reason)
        return BatchStatus(_slurm_state(state.group(1)), state.group(1), exit_code, reason)

    def _from_sacct(self, ids: list[str]) -> dict[str, BatchStatus]:
        argv = ["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,ExitCode"]
        proc = self._command(argv)
        found = {}
        if proc.returncode != 0:
            return found
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0] in ids:
                exit_code, why = _slurm_exit(parts[2])
                found[parts[0]] = BatchStatus(_slurm_state(parts[1]), parts[1], exit_code, why)
        return found

    def _from_jobcomp(self, ids: list[str]) -> dict[str, BatchStatus]:
        config = self._slurm_config()
        path = config.get("JobCompLoc")
        if config.get("JobCompType") != "jobcomp/filetxt" or not path:
            return {}
        try:
            with open(path, "rb") as handle:
                # The newest records are at the end; a busy cluster's log can be large.
                handle.seek(max(0, os.path.getsize(path) - 8 * 1024 * 1024))
                text = handle.read().decode(errors="replace")
        except OSError:
            return {}
        wanted = set(ids)
        found = {}
        for line in text.splitlines():
            match = re.match(r"JobId=(\S+) ", line)
            if match and match.group(1) in wanted:
                state = (re.search(r"\bJobState=(\S+)", line) or [None, ""])[1]
                exit_code, why = _slurm_exit(
                    (re.search(r"\bExitCode=(\S+)", line) or [None, ""])[1]
                )
                found[match.group(1)] = BatchStatus(_slurm_state(state), state, exit_code, why)
        return found

    def status(self, job_ids: Iterable[str]) -> dict[str, BatchStatus]:
        """squeue for all ids, scontrol for exit codes, then sacct or the jobcomp log."""
        ids = self._check_ids(job_ids)
        if not ids:
            return {}
        result: dict[str, BatchStatus] = {}
        for job_id, (raw, reason) in self._from_squeue(ids).items():
            if job_id not in ids:
                continue
            state = _slurm_state(raw)
            reason = "" if reason in ("None", "(null)") else reason
            result[job_id] = BatchStatus(state, raw, None, reason)
        for job_id in ids:
            current = result.get(job_id)
            if current is None or current.final:
                detailed = self._from_scontrol(job_id)
                if detailed is not None:
                    result[job_id] = detailed
        missing = [job_id for job_id in ids if job_id not in result]
        if missing and self._slurm_config().get(
            "AccountingStorageType", "accounting_storage/none"
        ) != ("accounting_storage/none"):
            result.update(self._from_sacct(missing))
            missing = [job_id for job_id in ids if job_id not in result]
        if missing:
            result.update(self._from_jobcomp(missing))
        for job_id in ids:
            result.setdefault(
                job_id, BatchStatus(UNKNOWN, reason="Slurm has no record of this job")
            )
        return result

    def cancel(self, job_id: str) -> None:
        """``scancel``; a job that already finished or was forgotten is not an error."""
        (job_id,) = self._check_ids([job_id])
        argv = ["scancel", job_id]
        proc = self._command(argv)
        if proc.returncode != 0 and not re.search(
            r"already completing or completed|Invalid job id", proc.stderr, re.IGNORECASE
        ):
            raise self._failure(argv, proc)
