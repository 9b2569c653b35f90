from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django.views.decorators.cache import never_cache
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularSwaggerSplitView,
)
from rest_framework.authtoken.views import obtain_auth_token

from dmu.urls import api_urlpatterns as dmu_api
from pilotchecker.urls import api_urlpatterns as pilot_api
from skims.urls import api_urlpatterns as skim_api
from skims.views import home
from tagdb.urls import api_urlpatterns as tag_api

from . import views

# Swagger UI styles its page with inline styles: only this page gets them on top of the
# portal's Content-Security-Policy. Its own script is served as a file (the "split" view),
# so no inline script is needed. (ReDoc is not offered: it loads fonts and a logo from
# other sites.)
docs_policy = csp_update({"style-src": ["'unsafe-inline'"]})

api_patterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The documentation pages are pages: they send an anonymous visitor to the login page.
    path(
        "docs/",
        docs_policy(login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema"))),
        name="api-docs",
    ),
    # an answer that holds a token is never kept by a browser or a proxy
    path("token/", never_cache(obtain_auth_token), name="api-token"),
    *skim_api,
    *dmu_api,
    *tag_api,
    *pilot_api,
]

urlpatterns = [
    path("", home, name="home"),
    path(
        "login/",
        # the portal's own name, not the host the request came to
        auth_views.LoginView.as_view(extra_context={"site_name": settings.SITE_NAME}),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", never_cache(views.account), name="account"),
    path("account/token/", never_cache(views.new_token), name="new_token"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("", include("dmu.urls")),
    path("", include("tagdb.urls")),
    path("", include("pilotchecker.urls")),
    path("", include("skims.urls")),
]
