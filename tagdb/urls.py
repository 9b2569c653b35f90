from django.urls import path  # noqa: F401

app_name = "tagdb"

urlpatterns: list = []

api_urlpatterns: list = []
