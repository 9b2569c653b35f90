from django.urls import path, re_path

from . import api, views

app_name = "tagdb"

urlpatterns = [
    path("tags/", views.collection_list, name="collections"),
    path("tags/build/", views.build_new, name="build_new"),
    path("tags/builds/<int:pk>/", views.build_detail, name="build"),
    path("tags/builds/<int:pk>/cancel/", views.build_cancel, name="build_cancel"),
    path("tags/queries/<int:pk>/delete/", views.delete_query, name="delete_query"),
    path("tags/<int:pk>/", views.collection_detail, name="collection"),
    path("tags/<int:pk>/count/", views.count_fragment, name="count"),
    path("tags/<int:pk>/events.csv", views.events_csv, name="events_csv"),
    path("tags/<int:pk>/events.json", views.events_json, name="events_json"),
    path("tags/<int:pk>/histogram.svg", views.histogram_image, name="histogram_svg"),
    path("tags/<int:pk>/queries/", views.save_query, name="save_query"),
    path("tags/<int:pk>/pick/", views.pick, name="pick"),
]


def _api(route: str, view, name: str):
    """An API route that answers with or without the trailing slash (POST cannot redirect)."""
    return re_path(rf"^{route}/?$", view, name=name)


api_urlpatterns = [
    _api("tags", api.CollectionList.as_view(), "api-tag-collections"),
    _api("tags/schemas", api.SchemaList.as_view(), "api-tag-schemas"),
    _api("tags/build", api.StartBuild.as_view(), "api-tag-build"),
    _api(r"tags/builds/(?P<pk>\d+)", api.BuildDetail.as_view(), "api-tag-build-detail"),
    _api(r"tags/builds/(?P<pk>\d+)/cancel", api.CancelBuild.as_view(), "api-tag-build-cancel"),
    _api(r"tags/queries/(?P<pk>\d+)", api.SavedQueryDetail.as_view(), "api-tag-query"),
    _api(r"tags/(?P<pk>\d+)", api.CollectionDetail.as_view(), "api-tag-collection"),
    _api(r"tags/(?P<pk>\d+)/count", api.Count.as_view(), "api-tag-count"),
    _api(r"tags/(?P<pk>\d+)/histogram", api.HistogramView.as_view(), "api-tag-histogram"),
    _api(r"tags/(?P<pk>\d+)/events", api.Events.as_view(), "api-tag-events"),
    _api(r"tags/(?P<pk>\d+)/top", api.Top.as_view(), "api-tag-top"),
    _api(r"tags/(?P<pk>\d+)/files-touched", api.FilesTouched.as_view(), "api-tag-files"),
    _api(r"tags/(?P<pk>\d+)/pick", api.Pick.as_view(), "api-tag-pick"),
    _api(r"tags/(?P<pk>\d+)/good-runs", api.GoodRuns.as_view(), "api-tag-good-runs"),
    _api(r"tags/(?P<pk>\d+)/queries", api.SavedQueryList.as_view(), "api-tag-queries"),
]
