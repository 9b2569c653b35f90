from django.apps import AppConfig


class TagdbConfig(AppConfig):
    name = "tagdb"
    verbose_name = "TAG database"
