"""REST endpoints of the catalog: datasets, files, replicas, storage elements, registration,
transfers."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from dss.api import validated
from dss.errors import NotFound
from dss.roles import PHYSICIST, roles_of

from . import actions, catalogs
from .models import (
    CATALOG,
    Dataset,
    File,
    RegistrationJob,
    Replica,
    RucioRegistration,
    StorageElement,
    TransferFile,
)


class StorageElementSerializer(serializers.ModelSerializer):
    class Meta:
        model = StorageElement
        fields = ["name", "url", "description", "user_writable"]


class ReplicaSerializer(serializers.ModelSerializer):
    storage_element = serializers.CharField(source="storage_element.name")

    class Meta:
        model = Replica
        fields = ["storage_element", "url", "path", "state"]


class FileSerializer(serializers.ModelSerializer):
    replicas = ReplicaSerializer(many=True, read_only=True)

    class Meta:
        model = File
        fields = ["lfn", "guid", "bytes", "adler32", "events", "tree", "replicas"]


class DatasetSummarySerializer(serializers.ModelSerializer):
    files = serializers.IntegerField(source="n_files", read_only=True)
    events = serializers.IntegerField(source="n_events", read_only=True)
    bytes = serializers.IntegerField(source="n_bytes", read_only=True)

    class Meta:
        model = Dataset
        fields = ["name", "description", "files", "events", "bytes", "created_at"]


class DatasetSerializer(DatasetSummarySerializer):
    files = FileSerializer(many=True, read_only=True)
    n_files = serializers.IntegerField(read_only=True)
    events = serializers.IntegerField(source="n_events", read_only=True)

    class Meta(DatasetSummarySerializer.Meta):
        fields = ["name", "description", "n_files", "events", "bytes", "created_at", "files"]


class RegisterSerializer(serializers.Serializer):
    dataset = serializers.CharField(max_length=256)
    storage_element = serializers.CharField(max_length=64)
    paths = serializers.ListField(
        child=serializers.CharField(max_length=1000), min_length=1, max_length=10000
    )
    tree = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    wait = serializers.BooleanField(
        default=True,
        help_text="true: register now and answer with the dataset; false: queue a job and answer 202",
    )


class RegistrationJobSerializer(serializers.ModelSerializer):
    storage_element = serializers.CharField(source="storage_element.name")

    class Meta:
        model = RegistrationJob
        fields = [
            "id",
            "state",
            "dataset_name",
            "storage_element",
            "paths",
            "progress_done",
            "progress_total",
            "files_added",
            "message",
            "created_at",
            "started_at",
            "finished_at",
        ]


def registered_answer(dataset: Dataset, added: int) -> Response:
    """The dataset with its files after a registration or import: 201 if files were added."""
    dataset = (
        actions.datasets_with_totals()
        .prefetch_related("files__replicas__storage_element")
        .get(pk=dataset.pk)
    )
    body = DatasetSerializer(dataset).data
    body["files_added"] = added
    return Response(body, status=status.HTTP_201_CREATED if added else status.HTTP_200_OK)


class CanRegister(permissions.BasePermission):
    message = "registering datasets needs the admin role"

    def has_permission(self, request, view):
        return request.user.has_perm("dmu.add_dataset")


class CanRegisterOwn(CanRegister):
    """Admins register anything; physicists their own datasets (``check_may_write``)."""

    message = "registering datasets needs the admin role (or, for your own, the physicist role)"

    def has_permission(self, request, view):
        return super().has_permission(request, view) or PHYSICIST in roles_of(request.user)


class DatasetList(generics.ListAPIView):
    """Datasets with their totals; `?q=` searches names and descriptions."""

    serializer_class = DatasetSummarySerializer

    def get_queryset(self):
        return actions.search_datasets(self.request.query_params.get("q", ""))

    def list(self, request, *args, **kwargs):
        # cached under the catalog's generation, as the dataset list page is
        q = request.query_params.get("q", "").strip()

        def count() -> int:
            return self.get_queryset().count()

        def rows(offset: int, limit: int) -> list[dict]:
            page = self.get_queryset()[offset : offset + limit]
            return [dict(row) for row in self.get_serializer(page, many=True).data]

        # the queryset is built only when the cache does not hold the answer
        return self.paginator.cached_page(request, CATALOG, ("api-datasets", q), count, rows)


class DatasetDetail(generics.RetrieveAPIView):
    """A dataset with its files and where each file's replicas are."""

    serializer_class = DatasetSerializer
    lookup_field = "name"

    def get_queryset(self):
        return actions.datasets_with_totals().prefetch_related("files__replicas__storage_element")

    def get_object(self):
        dataset = self.get_queryset().filter(name=self.kwargs["name"]).first()
        if dataset is None:
            raise NotFound(f"no dataset named {self.kwargs['name']!r}", where="dataset")
        return dataset


class StorageElementList(generics.ListAPIView):
    serializer_class = StorageElementSerializer
    queryset = StorageElement.objects.all()
    pagination_class = None


class RegisterDataset(APIView):
    """Register ROOT files already on a storage element as (part of) a dataset."""

    permission_classes = [permissions.IsAuthenticated, CanRegisterOwn]

    @extend_schema(
        request=RegisterSerializer,
        responses={201: DatasetSerializer, 202: RegistrationJobSerializer},
    )
    def post(self, request):
        d = validated(RegisterSerializer, request.data)
        se = actions.get_storage_element(d["storage_element"])
        # a physicist's `dmu put` writes only user.<name>.* on storage open to users
        actions.check_may_write(request.user, d["dataset"], se, d["paths"])
        if not d["wait"]:
            with transaction.atomic():
                job = actions.do_enqueue_registration(
                    d["dataset"], se, d["paths"], user=request.user, tree=d.get("tree", "")
                )
            return Response(RegistrationJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        dataset, added = actions.check_register_dataset(
            d["dataset"],
            se,
            d["paths"],
            user=request.user,
            tree=d.get("tree") or None,
            description=d.get("description", ""),
        )
        catalogs.queue_rucio_registration(dataset)
        return registered_answer(dataset, added)


class RegistrationJobDetail(generics.RetrieveAPIView):
    serializer_class = RegistrationJobSerializer
    queryset = RegistrationJob.objects.select_related("storage_element")


class WhoAmISerializer(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    scope = serializers.CharField(
        help_text="the prefix of the datasets you may write: user.<username>."
    )
    user_writable_storage_elements = serializers.ListField(
        child=serializers.CharField(), help_text="storage elements open to users' datasets"
    )


class WhoAmI(APIView):
    """Who the token belongs to: user name, roles, and where they may write their own
    datasets (the notebook client names a skim's output in this scope by default)."""

    @extend_schema(responses=WhoAmISerializer)
    def get(self, request):
        writable = StorageElement.objects.filter(user_writable=True).order_by("name")
        return Response(
            {
                "username": request.user.get_username(),
                "roles": sorted(roles_of(request.user)),
                "scope": actions.user_scope_prefix(request.user),
                "user_writable_storage_elements": list(writable.values_list("name", flat=True)),
            }
        )


# --------------------------------------------------------------------------- transfers


class TransferRequestSerializer(serializers.Serializer):
    dataset = serializers.CharField(max_length=256)
    destination = serializers.CharField(max_length=64, help_text="storage element name")
    files = serializers.ListField(
        child=serializers.CharField(max_length=256),
        required=False,
        max_length=100000,
        help_text="logical names of the files to copy; absent: every file of the dataset",
    )
    source = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="copy only from replicas on this storage element",
    )


class TransferFileSerializer(serializers.ModelSerializer):
    lfn = serializers.CharField(source="file.lfn")
    bytes = serializers.IntegerField(source="file.bytes")
    adler32 = serializers.CharField(source="file.adler32")
    source = serializers.CharField(source="source.name", default=None)

    class Meta:
        model = TransferFile
        fields = [
            "lfn",
            "state",
            "source",
            "path",
            "bytes",
            "bytes_done",
            "rate_mb_s",
            "attempts",
            "already_there",
            "adler32",
            "error",
            "error_code",
            "started_at",
            "finished_at",
        ]


class TransferSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    dataset = serializers.CharField(source="dataset.name")
    destination = serializers.CharField(source="destination.name")
    source = serializers.CharField(source="source.name", default=None)
    owner = serializers.CharField(source="owner.username", default=None)
    n_files = serializers.IntegerField()
    files_done = serializers.IntegerField(source="n_done")
    files_failed = serializers.IntegerField(source="n_failed")
    bytes = serializers.IntegerField(source="progress_total")
    bytes_done = serializers.SerializerMethodField()
    rate_mb_s = serializers.SerializerMethodField()
    attempts = serializers.SerializerMethodField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()

    def get_bytes_done(self, t) -> int:
        return int(t.bytes_done or 0)

    def get_rate_mb_s(self, t) -> float:
        """The current rate of the running copies (0 once the transfer ended)."""
        return round(float(t.rate_now or 0), 2)

    def get_attempts(self, t) -> int:
        return int(t.total_attempts or 0)


class TransferSerializer(TransferSummarySerializer):
    files = serializers.SerializerMethodField()

    @extend_schema_field(TransferFileSerializer(many=True))
    def get_files(self, t) -> list:
        items = t.files.select_related("file", "source").order_by("file__lfn")
        return TransferFileSerializer(items, many=True).data


class CanTransfer(permissions.BasePermission):
    message = "transfers need the admin role"

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or request.user.has_perm(
            "dmu.add_transfer"
        )


def _transfer(pk: int):
    t = actions.transfers_with_totals().filter(pk=pk).first()
    if t is None:
        raise NotFound(f"no transfer #{pk}", where="transfer")
    return t


class TransferList(generics.ListAPIView):
    """Transfers, newest first (`?state=`, `?dataset=`); POST requests a new one."""

    serializer_class = TransferSummarySerializer
    permission_classes = [permissions.IsAuthenticated, CanTransfer]

    def get_queryset(self):
        qs = actions.transfers_with_totals().order_by("-created_at")
        state = self.request.query_params.get("state")
        if state:
            qs = qs.filter(state=state)
        dataset = self.request.query_params.get("dataset")
        if dataset:
            qs = qs.filter(dataset__name=dataset)
        return qs

    @extend_schema(request=TransferRequestSerializer, responses={201: TransferSerializer})
    def post(self, request):
        d = validated(TransferRequestSerializer, request.data)
        dataset = actions.get_dataset(d["dataset"])
        destination = actions.get_storage_element(d["destination"])
        source = actions.get_storage_element(d["source"]) if d.get("source") else None
        with transaction.atomic():
            transfer = actions.check_request_transfer(
                dataset, destination, lfns=d.get("files"), source=source, user=request.user
            )
        return Response(
            TransferSerializer(_transfer(transfer.pk)).data, status=status.HTTP_201_CREATED
        )


class TransferDetail(APIView):
    """One transfer with each file's state, bytes, rate, attempts and error."""

    @extend_schema(responses={200: TransferSerializer})
    def get(self, request, pk: int):
        return Response(TransferSerializer(_transfer(pk)).data)


class TransferCancel(APIView):
    """Cancel a transfer: queued files never start, running copies stop and leave nothing."""

    permission_classes = [permissions.IsAuthenticated, CanTransfer]

    @extend_schema(request=None, responses={200: TransferSummarySerializer})
    def post(self, request, pk: int):
        actions.do_cancel_transfer(actions.get_transfer(pk), request.user)
        return Response(TransferSummarySerializer(_transfer(pk)).data)


# --------------------------------------------------------------------------- Rucio


class RucioDatasetSerializer(serializers.Serializer):
    scope = serializers.CharField()
    name = serializers.CharField()
    did = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    length = serializers.IntegerField(allow_null=True)
    in_portal = serializers.BooleanField()


class RucioFileSerializer(serializers.Serializer):
    scope = serializers.CharField()
    name = serializers.CharField()
    bytes = serializers.IntegerField()
    adler32 = serializers.CharField()
    guid = serializers.CharField()
    replicas = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class RucioImportSerializer(serializers.Serializer):
    scope = serializers.CharField(max_length=25)
    name = serializers.CharField(max_length=250)


class RucioRegistrationSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.name")
    did = serializers.CharField()

    class Meta:
        model = RucioRegistration
        fields = [
            "dataset",
            "did",
            "state",
            "rse",
            "attempts",
            "files_registered",
            "last_error",
            "next_attempt_at",
            "registered_at",
            "updated_at",
        ]


class RucioDatasetList(APIView):
    """Datasets in the experiment's Rucio: `?scope=` (required) and `?name=` (a pattern, `*`
    is any text)."""

    @extend_schema(
        operation_id="rucio_datasets_search", responses=RucioDatasetSerializer(many=True)
    )
    def get(self, request):
        found = catalogs.RucioCatalog().search(
            request.query_params.get("scope", ""), request.query_params.get("name", "*")
        )
        return Response(RucioDatasetSerializer(found, many=True).data)


class RucioDatasetFiles(APIView):
    """A Rucio dataset's files, each with its replicas' URLs by RSE."""

    @extend_schema(operation_id="rucio_dataset_files", responses=RucioFileSerializer(many=True))
    def get(self, request, scope: str, name: str):
        files = catalogs.RucioCatalog().files(scope, name)
        return Response(RucioFileSerializer(files, many=True).data)


class RucioImport(APIView):
    """Import a Rucio dataset into the portal's catalog, verifying every file's checksum."""

    permission_classes = [permissions.IsAuthenticated, CanRegister]

    @extend_schema(request=RucioImportSerializer, responses={201: DatasetSerializer})
    def post(self, request):
        d = validated(RucioImportSerializer, request.data)
        dataset, added = catalogs.check_import_from_rucio(d["scope"], d["name"], user=request.user)
        return registered_answer(dataset, added)


class DatasetRucioStatus(APIView):
    """GET: whether a dataset is registered in Rucio. POST: queue its registration again."""

    def get_permissions(self):
        if self.request.method == "POST":
            return [permissions.IsAuthenticated(), CanRegister()]
        return [permissions.IsAuthenticated()]

    def _answer(self, dataset):
        reg = catalogs.get_rucio_registration(dataset)
        if reg is None:
            raise NotFound(f"{dataset.name} was never queued for Rucio", where="dataset")
        return Response(RucioRegistrationSerializer(reg).data)

    @extend_schema(responses=RucioRegistrationSerializer)
    def get(self, request, name: str):
        return self._answer(actions.get_dataset(name))

    @extend_schema(request=None, responses=RucioRegistrationSerializer)
    def post(self, request, name: str):
        dataset = actions.get_dataset(name)
        if not catalogs.rucio_configured():
            raise catalogs.RucioError("no Rucio server is configured", where="settings")
        with transaction.atomic():
            catalogs.queue_rucio_registration(dataset)
        return self._answer(dataset)
