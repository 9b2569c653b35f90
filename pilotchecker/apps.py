from django.apps import AppConfig


class PilotcheckerConfig(AppConfig):
    name = "pilotchecker"
    verbose_name = "PilotChecker"
