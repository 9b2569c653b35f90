"""Template context shared by every page: the site name and the user's roles."""

from django.conf import settings

from .roles import roles_of


def portal(request):
    user = getattr(request, "user", None)
    return {
        "site_name": settings.SITE_NAME,
        "user_roles": roles_of(user) if user is not None and user.is_authenticated else set(),
    }
