from __future__ import annotations

from typing import Any

from django import forms

from dss.errors import InvalidInput
from dss.forms import add_domain_error

from . import batch
from .actions import MAX_PILOTS_PER_SUBMIT
from .models import Site, SiteStatus, check_requirements, check_submit_params

TEXTAREA = {"rows": 3}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class SiteForm(forms.Form):
    """A site's settings as separate fields; the actions validate them as the pilot will."""

    name = forms.CharField(
        label="Name", max_length=64, help_text="letters, digits, '_', '.', '-', e.g. UKI-LT2-QMUL"
    )
    description = forms.CharField(label="Description", max_length=200, required=False)
    batch_system = forms.ChoiceField(label="Batch system", choices=())
    # submit parameters
    partition = forms.CharField(
        label="Partition", required=False, help_text="Slurm: a partition, or several: a,b"
    )
    account = forms.CharField(label="Account", required=False, help_text="Slurm: the account")
    time_limit = forms.CharField(
        label="Wall time",
        required=False,
        help_text="minutes, HH:MM:SS or D-HH:MM:SS; default: the pilot timeout",
    )
    extra = forms.CharField(
        label="Extra directives",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="Slurm: one --key=value per line, e.g. --mem=2G or --qos=short",
    )
    env = forms.CharField(
        label="Job environment",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one NAME=value per line, added to the pilot's environment",
    )
    # requirements
    min_cores = forms.IntegerField(
        label="Minimum cores", required=False, min_value=0, help_text="default 1"
    )
    min_memory_mb = forms.IntegerField(
        label="Minimum memory (MB)", required=False, min_value=0, help_text="default 0"
    )
    min_work_disk_gb = forms.FloatField(
        label="Free disk in the work directory (GB)",
        required=False,
        min_value=0,
        help_text="default 2",
    )
    min_tmp_disk_gb = forms.FloatField(
        label="Free disk in /tmp (GB)", required=False, min_value=0, help_text="default 1"
    )
    python_min = forms.CharField(
        label="Lowest Python version", required=False, max_length=20, help_text="default 3.6"
    )
    credential_min_hours = forms.FloatField(
        label="Credential lifetime (hours)",
        required=False,
        min_value=0,
        help_text="a grid proxy or token must last this long; default 72",
    )
    require_credential = forms.BooleanField(
        label="A credential is required",
        required=False,
        help_text="without it a missing proxy or token passes",
    )
    cvmfs_repos = forms.CharField(
        label="CVMFS repositories",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one per line, e.g. atlas.cern.ch; each must be mounted and alive",
    )
    paths = forms.CharField(
        label="Paths that must exist",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one per line; $VARS and ~ are expanded on the node",
    )
    tools = forms.CharField(
        label="Tools on PATH",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one program name per line, e.g. xrdcp; each is run as 'name --version' "
        "(no shell, no arguments of yours) and must exit 0",
    )
    allowed_commands = forms.CharField(
        label="Checks from the portal's list",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one name per line from the checks this portal allows (DSS_PILOT_COMMANDS)",
    )
    reach = forms.CharField(
        label="Storage elements to reach",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one storage element name per line; the pilot must open a connection to it",
    )
    contacts = forms.CharField(
        label="Contacts",
        required=False,
        widget=forms.Textarea(attrs=TEXTAREA),
        help_text="one user name per line: they may read this site's pilot reports and logs",
    )
    # schedule
    pilot_interval_minutes = forms.IntegerField(
        label="Periodic pilot every (minutes)",
        required=False,
        min_value=1,
        help_text="empty: no periodic pilots; only periodic pilots change the site's status",
    )
    pilot_timeout_minutes = forms.IntegerField(
        label="Pilot timeout (minutes)",
        min_value=1,
        initial=30,
        help_text="a pilot without a report after this long is lost",
    )

    GROUPS = (
        ("Site", ("name", "description", "batch_system", "contacts")),
        ("Submit parameters", ("partition", "account", "time_limit", "extra", "env")),
        (
            "Requirements",
            (
                "min_cores",
                "min_memory_mb",
                "min_work_disk_gb",
                "min_tmp_disk_gb",
                "python_min",
                "credential_min_hours",
                "require_credential",
                "cvmfs_repos",
                "paths",
                "tools",
                "allowed_commands",
                "reach",
            ),
        ),
        ("Schedule", ("pilot_interval_minutes", "pilot_timeout_minutes")),
    )
    PARAM_FIELDS = ("partition", "account", "time_limit", "extra", "env")
    REQUIREMENT_FIELDS = GROUPS[2][1]
    LIST_FIELDS = ("cvmfs_repos", "paths", "tools", "allowed_commands", "reach")

    def __init__(self, *args, site: Site | None = None, **kwargs):
        self.site = site
        if site is not None and "initial" not in kwargs:
            kwargs["initial"] = self.initial_for(site)
        super().__init__(*args, **kwargs)
        self.fields["batch_system"].choices = [(n, n) for n in batch.adapter_names()]
        if site is not None:
            self.fields["name"].disabled = True

    @property
    def groups(self):
        return [(legend, [self[name] for name in names]) for legend, names in self.GROUPS]

    @classmethod
    def initial_for(cls, site: Site) -> dict[str, Any]:
        initial: dict[str, Any] = {
            "name": site.name,
            "description": site.description,
            "batch_system": site.batch_system,
            "pilot_interval_minutes": site.pilot_interval_minutes,
            "pilot_timeout_minutes": site.pilot_timeout_minutes,
            "contacts": "\n".join(u.get_username() for u in site.contacts.all()),
        }
        params = site.submit_params
        for key in ("partition", "account", "time_limit"):
            initial[key] = params.get(key, "")
        extra = params.get("extra") or []
        initial["extra"] = "\n".join(extra.split() if isinstance(extra, str) else extra)
        initial["env"] = "\n".join(f"{k}={v}" for k, v in (params.get("env") or {}).items())
        for key in cls.REQUIREMENT_FIELDS:
            value = site.requirements.get(key)
            if key in cls.LIST_FIELDS:
                value = "\n".join(
                    " ".join(v) if isinstance(v, list) else str(v) for v in value or []
                )
            initial[key] = value
        return initial

    def clean_env(self) -> dict[str, str]:
        env = {}
        for line in _lines(self.cleaned_data["env"]):
            name, sep, value = line.partition("=")
            if not sep:
                raise forms.ValidationError(f"{line!r} is not NAME=value")
            env[name.strip()] = value
        return env

    def clean(self) -> dict[str, Any]:
        """Check every submit parameter and requirement on its own, so that each bad field
        shows its error at once (the action checks the whole configuration again)."""
        cleaned = super().clean()
        if self.errors:
            return cleaned
        values = self.site_settings()
        problems = []
        for key, value in values["submit_params"].items():
            try:
                check_submit_params(values["batch_system"], {key: value})
            except InvalidInput as e:
                problems.append(e)
        for key, value in values["requirements"].items():
            try:
                check_requirements({key: value})
            except InvalidInput as e:
                problems.append(e)
        for e in problems:
            add_domain_error(self, e, e.where)
        return cleaned

    def site_settings(self) -> dict[str, Any]:
        """The form as the keyword arguments of do_add_site / check_update_site.

        Settings the form does not show (a job name, a probe timeout set through the API)
        are kept as they were.
        """
        d = self.cleaned_data
        base_params = dict(self.site.submit_params) if self.site else {}
        base_reqs = dict(self.site.requirements) if self.site else {}
        params = {k: v for k, v in base_params.items() if k not in self.PARAM_FIELDS}
        for key in ("partition", "account", "time_limit"):
            if d[key]:
                params[key] = d[key].strip()
        if _lines(d["extra"]):
            params["extra"] = _lines(d["extra"])
        if d["env"]:
            params["env"] = d["env"]
        reqs = {k: v for k, v in base_reqs.items() if k not in self.REQUIREMENT_FIELDS}
        for key in self.REQUIREMENT_FIELDS:
            value = d[key]
            if key in self.LIST_FIELDS:
                value = _lines(value)
            if key == "require_credential":
                value = value or None
            if key in ("min_work_disk_gb", "min_tmp_disk_gb", "credential_min_hours"):
                value = int(value) if value is not None and value == int(value) else value
            if value not in (None, "", []):
                reqs[key] = value
        return {
            "batch_system": d["batch_system"],
            "description": d["description"],
            "submit_params": params,
            "requirements": reqs,
            "pilot_interval_minutes": d["pilot_interval_minutes"],
            "pilot_timeout_minutes": d["pilot_timeout_minutes"],
            "contacts": _lines(d["contacts"]),
        }


class SubmitForm(forms.Form):
    site = forms.ModelChoiceField(
        label="Site", queryset=Site.objects.order_by("name"), to_field_name="name"
    )
    n = forms.IntegerField(
        label="Number of pilots",
        min_value=1,
        max_value=MAX_PILOTS_PER_SUBMIT,
        initial=1,
        help_text=f"1 to {MAX_PILOTS_PER_SUBMIT}; each is its own batch job",
    )


class StatusForm(forms.Form):
    status = forms.ChoiceField(label="New status", choices=SiteStatus.choices)
    reason = forms.CharField(
        label="Reason",
        max_length=500,
        help_text="kept in the site's history, e.g. a ticket number or a downtime",
    )
