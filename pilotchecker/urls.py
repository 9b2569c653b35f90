from django.urls import path

from . import api, views

app_name = "pilotchecker"

urlpatterns = [
    path("sites/", views.site_list, name="sites"),
    path("sites/new/", views.site_create, name="site_create"),
    path("sites/<str:name>/", views.site_detail, name="site"),
    path("sites/<str:name>/edit/", views.site_edit, name="site_edit"),
    path("sites/<str:name>/status/", views.site_status, name="site_status"),
    path("pilots/submit/", views.submit, name="submit"),
    path("pilots/<int:pk>/", views.pilot_detail, name="pilot"),
    path("pilots/<int:pk>/cancel/", views.pilot_cancel, name="pilot_cancel"),
]

api_urlpatterns = [
    path("ping/", api.Ping.as_view(), name="api-ping"),
    path("sites/", api.SiteList.as_view(), name="api-sites"),
    path("sites/<str:name>/", api.SiteDetail.as_view(), name="api-site"),
    path("sites/<str:name>/status/", api.SiteStatusView.as_view(), name="api-site-status"),
    path("pilots/", api.PilotList.as_view(), name="api-pilots"),
    path("pilots/<int:pk>/", api.PilotDetail.as_view(), name="api-pilot"),
    path("pilots/<int:pk>/report/", api.PilotReport.as_view(), name="api-pilot-report"),
    path("pilots/<int:pk>/cancel/", api.PilotCancel.as_view(), name="api-pilot-cancel"),
]
