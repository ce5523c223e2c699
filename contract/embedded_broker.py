"""The embedded broker: kombu's filesystem transport, with messages written atomically.

kombu's own transport creates a message file and then writes it; a consumer polling the folder
can move the file away in between, read it empty and die (``JSONDecodeError``), and the message
is lost. Here each message is written under a hidden name and renamed into place, so a reader
sees a whole message or none.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: What Celery's ``broker_transport`` and kombu's ``Connection(transport=...)`` take.
TRANSPORT = "contract.embedded_broker:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        # A leading dot: the consumer only reads names of the form "<id>.<queue>.msg".
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.partial")
        with open(partial, "wb") as out:
            out.write(str_to_bytes(dumps(payload)))
        os.replace(partial, os.path.join(self.data_folder_out, name))


class Transport(filesystem.Transport):
    Channel = Channel
