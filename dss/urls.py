from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from dmu.urls import api_urlpatterns as dmu_api
from pilotchecker.urls import api_urlpatterns as pilot_api
from tagdb.urls import api_urlpatterns as tag_api

from . import api, views

api_patterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The documentation pages are pages: they send an anonymous visitor to the login page.
    path(
        "docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
    path(
        "redoc/",
        login_required(SpectacularRedocView.as_view(url_name="api-schema")),
        name="api-redoc",
    ),
    path("token/", obtain_auth_token, name="api-token"),
    path("skims/", api.SkimList.as_view(), name="api-skims"),
    path("skims/<int:pk>/", api.SkimDetail.as_view(), name="api-skim"),
    path("skims/<int:pk>/cancel/", api.SkimCancel.as_view(), name="api-skim-cancel"),
    path("skims/<int:pk>/retry/", api.SkimRetry.as_view(), name="api-skim-retry"),
    path("provenance/", api.ProvenanceList.as_view(), name="api-provenance-list"),
    path("provenance/<int:pk>/", api.ProvenanceDetail.as_view(), name="api-provenance"),
    path("provenance/<int:pk>/rerun/", api.ProvenanceRerun.as_view(), name="api-provenance-rerun"),
    path("branch-presets/", api.BranchPresetList.as_view(), name="api-branch-presets"),
    *dmu_api,
    *tag_api,
    *pilot_api,
]

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "login/",
        # the portal's own name, not the host the request came to
        auth_views.LoginView.as_view(extra_context={"site_name": settings.SITE_NAME}),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", views.account, name="account"),
    path("account/token/", views.new_token, name="new_token"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("", include("dmu.urls")),
    path("", include("tagdb.urls")),
    path("", include("pilotchecker.urls")),
]

urlpatterns += [
    path("skims/", views.skim_list, name="skims"),
    path("skims/new/", views.skim_new, name="skim_new"),
    path("skims/<int:pk>/", views.skim_detail, name="skim"),
    path("skims/<int:pk>/cancel/", views.skim_cancel, name="skim_cancel"),
    path("skims/<int:pk>/retry/", views.skim_retry, name="skim_retry"),
    path("provenance/", views.provenance_list, name="provenance_list"),
    path("provenance/<int:pk>/", views.provenance_detail, name="provenance"),
    path("provenance/<int:pk>/rerun/", views.provenance_rerun, name="provenance_rerun"),
]
