"""The embedded broker (dss/broker.py): a message is never seen half-written."""

from __future__ import annotations

import json
import os

import pytest
from kombu import Connection
from kombu.transport.filesystem import Empty

from dss.broker import Channel


@pytest.fixture
def channel(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection("filesystem://", transport_options=options) as conn:
        chan = conn.default_channel
        assert isinstance(chan, Channel)  # the portal's transport serves filesystem://
        yield chan, folder


def test_a_message_is_written_whole_then_named(channel, monkeypatch):
    chan, folder = channel
    seen = []
    real_replace = os.replace

    def watch(src, dst):
        # at the rename the final name does not exist yet and the whole message is there
        assert not os.path.exists(dst)
        seen.append(json.loads(open(src, "rb").read()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watch)
    chan._put("q", {"body": "x" * 100_000})
    assert seen and seen[0]["body"] == "x" * 100_000
    assert [p.name.endswith(".q.msg") for p in folder.iterdir()] == [True]
    assert chan._get("q")["body"] == "x" * 100_000


def test_a_message_being_written_is_not_taken(channel):
    chan, folder = channel
    (folder / ".12_abc.q.msg.part").write_bytes(b'{"body": "half')  # another process writes
    with pytest.raises(Empty):
        chan._get("q")
    chan._put("q", {"body": "whole"})
    assert chan._get("q")["body"] == "whole"
