from django.apps import AppConfig


class SkimsConfig(AppConfig):
    name = "skims"
    verbose_name = "Skim service"
