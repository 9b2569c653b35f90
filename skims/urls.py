from django.urls import path

from . import api, views

urlpatterns = [
    path("skims/", views.skim_list, name="skims"),
    path("skims/new/", views.skim_new, name="skim_new"),
    path("skims/<int:pk>/", views.skim_detail, name="skim"),
    path("skims/<int:pk>/cancel/", views.skim_cancel, name="skim_cancel"),
    path("skims/<int:pk>/retry/", views.skim_retry, name="skim_retry"),
    path("provenance/", views.provenance_list, name="provenance_list"),
    path("provenance/<int:pk>/", views.provenance_detail, name="provenance"),
    path("provenance/<int:pk>/rerun/", views.provenance_rerun, name="provenance_rerun"),
]

# Mounted under /api/ by the project's URLs.
api_urlpatterns = [
    path("skims/", api.SkimList.as_view(), name="api-skims"),
    path("skims/<int:pk>/", api.SkimDetail.as_view(), name="api-skim"),
    path("skims/<int:pk>/cancel/", api.SkimCancel.as_view(), name="api-skim-cancel"),
    path("skims/<int:pk>/retry/", api.SkimRetry.as_view(), name="api-skim-retry"),
    path("provenance/", api.ProvenanceList.as_view(), name="api-provenance-list"),
    path("provenance/<int:pk>/", api.ProvenanceDetail.as_view(), name="api-provenance"),
    path("provenance/<int:pk>/rerun/", api.ProvenanceRerun.as_view(), name="api-provenance-rerun"),
    path("skims/jobs/<int:pk>/report/", api.SkimJobReport.as_view(), name="api-skim-job-report"),
    path("branch-presets/", api.BranchPresetList.as_view(), name="api-branch-presets"),
]
