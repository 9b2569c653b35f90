from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DssConfig(AppConfig):
    name = "dss"
    verbose_name = "DSS kernel"

    def ready(self) -> None:
        # Importing the Celery app here (not in dss/__init__.py) keeps the `dss` package
        # importable without Django or Celery, for the command-line client.
        from . import celery  # noqa: F401
        from .roles import ensure_roles

        post_migrate.connect(ensure_roles, dispatch_uid="dss.ensure_roles")
        post_migrate.connect(replace_generations, dispatch_uid="dss.replace_generations")


def replace_generations(sender, using="default", **kwargs) -> None:
    """A migration may have changed cached data without the models' signals (historical
    models send none to ours): every generation gets a new token."""
    if sender.name != "dss":
        return
    from .generations import replace
    from .models import Generation

    for name in Generation.objects.using(using).values_list("name", flat=True):
        replace(name)
