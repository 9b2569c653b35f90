"""CLI edge: admin commands turn a domain error into a message and an exit code."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from django.core.management.base import BaseCommand, CommandError

from dss.errors import DSSError


class ActionCommand(BaseCommand, metaclass=ABCMeta):
    """A command whose ``run`` calls actions; DSSError ends it with the error's exit code."""

    def handle(self, *args, **options):
        try:
            return self.run(*args, **options)
        except DSSError as e:
            raise CommandError(str(e), returncode=e.exit_code) from None

    @abstractmethod
    def run(self, *args, **options): ...
