"""The embedded broker: kombu's filesystem transport, writing each message atomically.

kombu writes a message file in place and its readers take whatever ``*.msg`` file they
find, so a worker could read a message another process was still writing, fail to decode
it and stop ("Unrecoverable error: JSONDecodeError"). Here a message is written under a
name no reader takes (``.<name>.part``) and renamed to its final name only once whole; a
rename within one folder is atomic. Registered for ``filesystem://`` in dss/celery.py.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: written whole, then given its name."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: kombu's reader compares what follows the name's first dot with
        # '<queue>.msg', which '<stamp>_<uuid>.<queue>.msg.part' never is.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb", buffering=0) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
