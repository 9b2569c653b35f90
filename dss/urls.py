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

from conditions.urls import api_urlpatterns as conditions_api
from dmu.urls import api_urlpatterns as dmu_api
from pilotchecker.urls import api_urlpatterns as pilot_api
from skims.urls import api_urlpatterns as skim_api
from skims.views import home
from tagdb.urls import api_urlpatterns as tag_api

from . import api, views

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
    path("token/", never_cache(api.ObtainToken.as_view()), name="api-token"),
    path("tokens/", never_cache(api.TokenList.as_view()), name="api-tokens"),
    path(
        "tokens/<int:pk>/rotate/", never_cache(api.TokenRotate.as_view()), name="api-token-rotate"
    ),
    path(
        "tokens/<int:pk>/revoke/", never_cache(api.TokenRevoke.as_view()), name="api-token-revoke"
    ),
    *skim_api,
    *dmu_api,
    *tag_api,
    *pilot_api,
    *conditions_api,
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
    path("account/tokens/", never_cache(views.token_create), name="token_create"),
    path("account/tokens/<int:pk>/rotate/", never_cache(views.token_rotate), name="token_rotate"),
    path("account/tokens/<int:pk>/revoke/", never_cache(views.token_revoke), name="token_revoke"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("", include("dmu.urls")),
    path("", include("tagdb.urls")),
    path("", include("pilotchecker.urls")),
    path("", include("skims.urls")),
    path("", include("conditions.urls")),
]
