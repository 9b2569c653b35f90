"""The portal's roles as Django groups, and the permissions each one holds.

Roles are groups so that a site can give one person several of them. The groups are kept in
step with this table after every ``migrate``.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

PHYSICIST = "physicist"
ADMIN = "admin"
OPERATOR = "operator"
CONDITIONS_MANAGER = "conditions-manager"

# "app_label.codename" for every permission a role holds; browsing needs none.
ROLE_PERMISSIONS: dict[str, list[str]] = {
    PHYSICIST: [
        "tagdb.add_tagcollection",
        "tagdb.add_savedquery",
        "skims.add_skimjob",
    ],
    ADMIN: [
        "dmu.add_dataset",
        "dmu.change_dataset",
        "dmu.add_storageelement",
        "dmu.change_storageelement",
        "dmu.add_transfer",
        "tagdb.add_tagcollection",
        "pilotchecker.add_site",
        "pilotchecker.change_site",
        "pilotchecker.add_pilot",
    ],
    OPERATOR: [
        "skims.view_provenancerecord",
        "skims.rerun_skimjob",
    ],
    CONDITIONS_MANAGER: [
        "conditions.add_payloadiov",
        "conditions.change_globaltag",
    ],
}


def ensure_roles(**kwargs) -> None:
    """Create the role groups and give each exactly the permissions of ``ROLE_PERMISSIONS``."""
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = []
        for name in names:
            app_label, codename = name.split(".")
            perm = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if perm is not None:  # the app's model may come in a later migration
                perms.append(perm)
        group.permissions.set(perms)


def roles_of(user) -> set[str]:
    """The role names a user holds; a superuser holds them all."""
    if user.is_superuser:
        return set(ROLE_PERMISSIONS)
    return set(user.groups.filter(name__in=ROLE_PERMISSIONS).values_list("name", flat=True))


def is_admin(user) -> bool:
    """Whether ``user`` holds the admin role (a superuser holds every role)."""
    return bool(user is not None and user.is_authenticated and ADMIN in roles_of(user))


def may_change(user, job) -> bool:
    """Whether ``user`` may change (cancel) ``job``: its owner, or an admin."""
    if user is None or not user.is_authenticated:
        return False
    return job.owner_id == user.pk or is_admin(user)
