from django.urls import path

from . import api, views

app_name = "dmu"

urlpatterns = [
    path("datasets/", views.dataset_list, name="datasets"),
    path("datasets/register/", views.register, name="register"),
    path("datasets/<str:name>/", views.dataset_detail, name="dataset"),
    path("registrations/<int:pk>/", views.registration, name="registration"),
    path("storage/", views.storage_element_list, name="storage_elements"),
    path("storage/<str:name>/", views.storage_element_detail, name="storage_element"),
    path("storage/<str:name>/space/", views.storage_element_space, name="storage_element_space"),
    path("transfers/", views.transfer_list, name="transfers"),
    path("transfers/new/", views.transfer_new, name="transfer_new"),
    path("transfers/<int:pk>/", views.transfer_detail, name="transfer"),
    path("transfers/<int:pk>/cancel/", views.transfer_cancel, name="transfer_cancel"),
    path("rucio/", views.rucio_search, name="rucio_search"),
    path("rucio/<str:scope>/<str:name>/", views.rucio_dataset, name="rucio_dataset"),
    path("rucio/<str:scope>/<str:name>/import/", views.rucio_import, name="rucio_import"),
    path("datasets/<str:name>/rucio/", views.dataset_rucio_register, name="dataset_rucio_register"),
]

api_urlpatterns = [
    path("datasets/", api.DatasetList.as_view(), name="api-datasets"),
    path("datasets/register/", api.RegisterDataset.as_view(), name="api-register"),
    path("datasets/<str:name>/", api.DatasetDetail.as_view(), name="api-dataset"),
    path("registrations/<int:pk>/", api.RegistrationJobDetail.as_view(), name="api-registration"),
    path("storage-elements/", api.StorageElementList.as_view(), name="api-storage-elements"),
    path("whoami/", api.WhoAmI.as_view(), name="api-whoami"),
    path("transfers/", api.TransferList.as_view(), name="api-transfers"),
    path("transfers/<int:pk>/", api.TransferDetail.as_view(), name="api-transfer"),
    path("transfers/<int:pk>/cancel/", api.TransferCancel.as_view(), name="api-transfer-cancel"),
    path("rucio/datasets/", api.RucioDatasetList.as_view(), name="api-rucio-datasets"),
    path(
        "rucio/datasets/<str:scope>/<str:name>/",
        api.RucioDatasetFiles.as_view(),
        name="api-rucio-dataset",
    ),
    path("rucio/import/", api.RucioImport.as_view(), name="api-rucio-import"),
    path("datasets/<str:name>/rucio/", api.DatasetRucioStatus.as_view(), name="api-dataset-rucio"),
]
