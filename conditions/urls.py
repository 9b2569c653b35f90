"""Conditions pages, and the API routes: nopayloaddb's under /api/cdb_rest/ (see
conditions/api.py) and the portal's own under /api/conditions/."""

from django.urls import path

from . import api, views

app_name = "conditions"

urlpatterns = [
    path("conditions/", views.global_tags, name="global_tags"),
    path("conditions/compare/", views.compare, name="compare"),
    path("conditions/gt/<str:name>/", views.global_tag, name="global_tag"),
    path("conditions/gt/<str:name>/status/", views.global_tag_status, name="global_tag_status"),
    path("conditions/type/<str:name>/", views.run_axis, name="run_axis"),
]

api_urlpatterns = [
    path("cdb_rest/gt", api.GlobalTags.as_view(), name="cdb-gt"),
    path("cdb_rest/gt/<int:pk>", api.GlobalTagById.as_view(), name="cdb-gt-id"),
    path("cdb_rest/globalTag/<str:name>", api.GlobalTagByName.as_view(), name="cdb-gt-name"),
    path("cdb_rest/globalTags", api.GlobalTagsWithCounts.as_view(), name="cdb-gts"),
    path("cdb_rest/gtstatus", api.GlobalTagStatuses.as_view(), name="cdb-gtstatus"),
    path(
        "cdb_rest/gtPayloadLists/<str:name>",
        api.GlobalTagPayloadLists.as_view(),
        name="cdb-gt-lists",
    ),
    path(
        "cdb_rest/deleteGlobalTag/<str:name>", api.GlobalTagDelete.as_view(), name="cdb-gt-delete"
    ),
    path(
        "cdb_rest/cloneGlobalTag/<str:name>/<str:clone>",
        api.GlobalTagClone.as_view(),
        name="cdb-gt-clone",
    ),
    path(
        "cdb_rest/gt_change_status/<str:name>/<str:status>",
        api.GlobalTagChangeStatus.as_view(),
        name="cdb-gt-status",
    ),
    path("cdb_rest/pt", api.PayloadTypes.as_view(), name="cdb-pt"),
    path(
        "cdb_rest/deletePayloadType/<str:name>",
        api.PayloadTypeDelete.as_view(),
        name="cdb-pt-delete",
    ),
    path("cdb_rest/pl", api.PayloadLists.as_view(), name="cdb-pl"),
    path("cdb_rest/pl/<int:pk>", api.PayloadListById.as_view(), name="cdb-pl-id"),
    path("cdb_rest/pl_attach", api.PayloadListAttach.as_view(), name="cdb-pl-attach"),
    path(
        "cdb_rest/deletePayloadList/<str:name>",
        api.PayloadListDelete.as_view(),
        name="cdb-pl-delete",
    ),
    path("cdb_rest/piov", api.PayloadIOVs.as_view(), name="cdb-piov"),
    path("cdb_rest/piov/<int:pk>", api.PayloadIOVById.as_view(), name="cdb-piov-id"),
    path("cdb_rest/piov_attach", api.PayloadIOVAttach.as_view(), name="cdb-piov-attach"),
    path("cdb_rest/bulk_piov", api.PayloadIOVBulk.as_view(), name="cdb-piov-bulk"),
    path(
        "cdb_rest/deletePayloadIOV/<str:gt>/<str:pt>/<int:major>/<int:minor>",
        api.PayloadIOVDelete.as_view(),
        name="cdb-piov-delete",
    ),
    path(
        "cdb_rest/deletePayloadIOV/<str:gt>/<str:pt>/<int:major>/<int:minor>"
        "/<int:major_end>/<int:minor_end>",
        api.PayloadIOVRangeDelete.as_view(),
        name="cdb-piov-delete-range",
    ),
    path("cdb_rest/payloadiovs/", api.PayloadIOVLookup.as_view(), name="cdb-lookup"),
    path("conditions/grl/", api.GoodRunList.as_view(), name="api-conditions-grl"),
    path("conditions/luminosity/", api.Luminosity.as_view(), name="api-conditions-lumi"),
]
