from django.apps import AppConfig


class DmuConfig(AppConfig):
    name = "dmu"
    verbose_name = "Data movement and catalog"
