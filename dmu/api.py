"""REST endpoints of the catalog: datasets, files, replicas, storage elements, registration."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from dss.errors import InvalidInput, NotFound

from . import actions
from .models import Dataset, File, RegistrationJob, Replica, StorageElement


class StorageElementSerializer(serializers.ModelSerializer):
    class Meta:
        model = StorageElement
        fields = ["name", "url", "description"]


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


class CanRegister(permissions.BasePermission):
    message = "registering datasets needs the admin role"

    def has_permission(self, request, view):
        return request.user.has_perm("dmu.add_dataset")


class DatasetList(generics.ListAPIView):
    """Datasets with their totals; `?q=` searches names and descriptions."""

    serializer_class = DatasetSummarySerializer

    def get_queryset(self):
        return actions.search_datasets(self.request.query_params.get("q", ""))


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

    permission_classes = [permissions.IsAuthenticated, CanRegister]

    @extend_schema(
        request=RegisterSerializer,
        responses={201: DatasetSerializer, 202: RegistrationJobSerializer},
    )
    def post(self, request):
        s = RegisterSerializer(data=request.data)
        if not s.is_valid():
            field, problems = next(iter(s.errors.items()))
            raise InvalidInput(f"{field}: {' '.join(str(p) for p in problems)}", where=field)
        d = s.validated_data
        se = actions.get_storage_element(d["storage_element"])
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
        dataset = (
            actions.datasets_with_totals()
            .prefetch_related("files__replicas__storage_element")
            .get(pk=dataset.pk)
        )
        body = DatasetSerializer(dataset).data
        body["files_added"] = added
        return Response(body, status=status.HTTP_201_CREATED if added else status.HTTP_200_OK)


class RegistrationJobDetail(generics.RetrieveAPIView):
    serializer_class = RegistrationJobSerializer
    queryset = RegistrationJob.objects.select_related("storage_element")
