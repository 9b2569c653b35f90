"""The one Celery app of DSS, configured from Django settings (``CELERY_*``)."""

import os
import signal
from pathlib import Path

from celery import Celery
from celery.signals import beat_init, worker_init, worker_process_init
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dss.settings")
# The embedded broker writes messages atomically (dss/broker.py).
TRANSPORT_ALIASES["filesystem"] = "dss.broker:Transport"

app = Celery("dss")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _prepare_embedded_broker() -> None:
    """The embedded broker keeps messages in folders that must exist before either side connects."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key]).mkdir(parents=True, exist_ok=True)


_prepare_embedded_broker()


@worker_init.connect
@beat_init.connect
def _forget_secret_environment(**kwargs) -> None:
    """The worker and beat have read their settings: the pool processes they fork and any
    program those start (batch commands, local pilots) do not inherit the secrets."""
    from django.conf import settings

    settings.INSTALLED_APPS  # noqa: B018 - read the settings before their variables go
    from dss.settings import forget_secret_environment

    forget_secret_environment()


@worker_process_init.connect
def _leave_stopping_to_the_main_process(**kwargs) -> None:
    """A pool process ignores SIGTERM: stopping is the main process's job (it lets running
    work end, then stops its pool). A SIGTERM sent to the whole process group (Ctrl-C
    aside, what `make run`'s shell, systemd or a container runtime may do) otherwise kills
    the pool processes under the main one, which then waits for them for ever. A killed
    task would be lost anyway only to be taken over by the lease sweep; this keeps it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@worker_process_init.connect
def _import_event_data_libraries(**kwargs) -> None:
    """Each worker process imports the event-data stack once when it starts, so the first
    skim part or TAG file it runs is not slowed by imports (about a second)."""
    import awkward  # noqa: F401
    import uproot  # noqa: F401

    import skims.eventio  # noqa: F401
    import tagdb.schema  # noqa: F401
