from django.urls import path  # noqa: F401

app_name = "pilotchecker"

urlpatterns: list = []

api_urlpatterns: list = []
