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
        connect_accounts_generation()


def connect_accounts_generation() -> None:
    """Replace the ``accounts`` generation whenever a user, a group, a permission or who
    holds which of them changes (pages cached per user are kept under it)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .generations import accounts_changed

    user = get_user_model()
    for model in (user, Group, Permission):
        label = model._meta.label_lower
        post_save.connect(accounts_changed, sender=model, dispatch_uid=f"dss.accounts.save.{label}")
        post_delete.connect(
            accounts_changed, sender=model, dispatch_uid=f"dss.accounts.del.{label}"
        )
    for through in (user.groups.through, user.user_permissions.through, Group.permissions.through):
        label = through._meta.label_lower
        m2m_changed.connect(
            accounts_changed, sender=through, dispatch_uid=f"dss.accounts.m2m.{label}"
        )


def replace_generations(sender, using="default", **kwargs) -> None:
    """A migration may have changed cached data without the models' signals (historical
    models send none to ours): every generation gets a new token."""
    if sender.name != "dss":
        return
    from .generations import replace
    from .models import Generation

    for name in Generation.objects.using(using).values_list("name", flat=True):
        replace(name)
