"""A dashboard user without a browser: a client that speaks the Bokeh server protocol.

It opens a session of ``panel serve app.py`` over the websocket as a browser
would (a session token, ``PULL-DOC-REQ``, the ``document_ready`` event), shows the
Clipping tab, sets the
threshold widget (``PATCH-DOC``) and waits for what a browser would wait for:
the server's patches with the new clip summary and new clip-map data. It
renders nothing and builds no Bokeh models (the document stays JSON), so
tens of such users cost the machine little and a load test measures the
server. Used by ``benchmarks/load.py --client protocol``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from bokeh.util.token import generate_jwt_token, generate_session_id
from tornado.websocket import websocket_connect

__all__ = ["ProtocolSession"]

_IDS = itertools.count()
#: The Clipping tab's summary says this (as the Explore tab's does)
_SUMMARY = "samples rejected"


class ProtocolSession:
    """One dashboard session over the Bokeh websocket protocol.

    Parameters
    ----------
    url : str
        The app's URL, e.g. ``http://127.0.0.1:5006/app``.
    """

    def __init__(self, url: str):
        self.url = url
        self._socket = None
        self._models: dict = {}  # id -> JSON representation, for the ones we look for
        self._image_sources: set = set()
        self._patches: asyncio.Queue = asyncio.Queue()
        self._sent: dict = {}  # message id of a change -> when it was sent
        self._acks: dict = {}  # message id -> when the server's OK for it came
        #: what each patch from the server changed, as "kind attribute" per event, in order
        self.patches: list[list[str]] = []
        self._reader = None

    async def open(self) -> None:
        """Connect, pull the document and start reading the server's patches."""
        session_id = generate_session_id()
        token = generate_jwt_token(session_id)
        ws_url = "ws" + self.url.removeprefix("http") + "/ws"
        self._socket = await websocket_connect(
            ws_url, subprotocols=["bokeh", token], max_message_size=1 << 30)
        await self._read_message()  # ACK
        await self._send("PULL-DOC-REQ", {})
        _, content = await self._read_message()
        self._index(content)
        self._reader = asyncio.ensure_future(self._read_patches())
        # What a browser says once the page is drawn; Panel renders the rest after it.
        ready = {"type": "event", "name": "document_ready", "values": {"type": "map", "entries": []}}
        await self._send("PATCH-DOC", {"events": [
            {"kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": ready}]})

    async def close(self) -> None:
        """Close the websocket (the server then discards the session after its lifetime)."""
        if self._reader:
            self._reader.cancel()
        if self._socket:
            self._socket.close()

    async def show_tab(self, title: str, timeout: float = 120.0,
                       shows: str = _SUMMARY) -> None:
        """Make the tab titled ``title`` active and wait until a patch with the text ``shows``
        has arrived (the Clipping tab's summary by default), and first for the tabs, which a
        server still preparing shows only when ready."""
        tabs = await self._model(lambda model: model["type"] == "Tabs"
                                 and title in model["titles"], timeout)
        await self._change(tabs["id"], "active", tabs["titles"].index(title))
        await self.wait_for_text(shows, timeout)

    async def _model(self, wanted, timeout: float = 120.0) -> dict:
        """The first model for which ``wanted(model)`` is true, once a patch has brought it."""
        deadline = time.perf_counter() + timeout
        while not (found := [model for model in self._models.values() if wanted(model)]):
            await asyncio.wait_for(self._patches.get(), deadline - time.perf_counter())
        return found[0]

    async def wait_for_text(self, text: str, timeout: float = 120.0) -> None:
        """Wait until a patch from now on has brought ``text`` (in any new value)."""
        await self._wait(lambda seen: text in seen["text"], timeout)

    async def set_threshold(self, value: float, timeout: float = 120.0) -> float:
        """Type ``value`` into the threshold field; seconds until the new clip summary and
        clip-map data have come back (:attr:`acknowledged` says when the server took it)."""
        started = await self.send_threshold(value)
        await self._wait(lambda seen: _SUMMARY in seen["text"] and seen["image_data"], timeout)
        return time.perf_counter() - started

    async def send_threshold(self, value: float) -> float:
        """Send a threshold change without waiting for its result; the moment it was sent."""
        field = await self._model(lambda model: model["type"] == "Spinner"
                                  and model.get("threshold"))
        started = time.perf_counter()
        # typed and entered: a spinner's value and its throttled value change together
        self._sent[await self._change(field["id"], "value", float(value), "value_throttled")] = started
        return started

    @property
    def acknowledged(self) -> list[float]:
        """Seconds from each change sent to the server's OK for it, in order."""
        return [self._acks[msgid] - sent for msgid, sent in self._sent.items()
                if msgid in self._acks]

    # -- the protocol ---------------------------------------------------------------

    async def _send(self, msgtype: str, content: dict) -> str:
        header = {"msgid": str(next(_IDS)), "msgtype": msgtype}
        for part in (header, {}, content):
            await self._socket.write_message(json.dumps(part))
        return header["msgid"]

    async def _read_message(self) -> tuple[dict, dict]:
        """One message: header, metadata, content, and its binary buffers (skipped)."""
        header = json.loads(await self._socket.read_message())
        await self._socket.read_message()  # metadata
        content = json.loads(await self._socket.read_message())
        for _ in range(header.get("num_buffers", 0)):
            await self._socket.read_message()  # the buffer's header
            await self._socket.read_message()  # its bytes
        return header, content

    async def _change(self, model_id: str, attr: str, new, *also: str) -> str:
        """Set ``attr`` (and the attributes ``also``) of a model to ``new``, as the page would."""
        while not self._patches.empty():  # what came before the change does not answer it
            self._patches.get_nowait()
        events = [{"kind": "ModelChanged", "model": {"id": model_id}, "attr": name, "new": new}
                  for name in (attr, *also)]
        return await self._send("PATCH-DOC", {"events": events})

    async def _read_patches(self) -> None:
        while True:
            header, content = await self._read_message()
            if header["msgtype"] == "OK":
                self._acks[header.get("reqid")] = time.perf_counter()
            if header["msgtype"] == "PATCH-DOC":
                self.patches.append([f"{event.get('kind')} {event.get('attr', '')}".strip()
                                     for event in content.get("events", [])])
                self._index(content)
                await self._patches.put(self._what_changed(content))

    async def _wait(self, done, timeout: float) -> None:
        seen = {"text": "", "image_data": False}
        deadline = time.perf_counter() + timeout
        while not done(seen):
            changed = await asyncio.wait_for(self._patches.get(), deadline - time.perf_counter())
            seen = {"text": seen["text"] + changed["text"],
                    "image_data": seen["image_data"] or changed["image_data"]}

    def _what_changed(self, content: dict) -> dict:
        """A patch's new values as JSON text, and whether it brings a clip map's data."""
        texts, image_data = [], False
        for event in content.get("events", []):
            texts.append(json.dumps(event.get("new", event.get("data", ""))))
            target = (event.get("model") or {}).get("id") or event.get("column_source", {}).get("id")
            image_data |= target in self._image_sources and event.get("kind") in (
                "ModelChanged", "ColumnDataChanged", "ColumnsStreamed", "ColumnsPatched")
        return {"text": "".join(texts), "image_data": image_data}

    def _index(self, content) -> None:
        """Note the models we look for: tabs, the threshold field, clip maps' data sources."""
        for rep in _objects(content):
            name, attributes = rep.get("name", ""), rep.get("attributes", {})
            if name.endswith("Tabs"):
                titles = [(panel.get("attributes") or {}).get("title")
                          for panel in attributes.get("tabs", []) if isinstance(panel, dict)]
                if all(titles):
                    self._models[rep["id"]] = {"type": "Tabs", "id": rep["id"], "titles": titles}
            if "ccdred-threshold" in attributes.get("css_classes", []):
                for inner in _objects(attributes):
                    if inner.get("name", "").endswith("Spinner"):
                        self._models[inner["id"]] = {"type": "Spinner", "id": inner["id"],
                                                     "threshold": True}
            glyph = attributes.get("glyph")
            if name.endswith("GlyphRenderer") and isinstance(glyph, dict) \
                    and glyph.get("name", "").endswith("Image"):
                self._image_sources.add(attributes["data_source"]["id"])


def _objects(value):
    """Every Bokeh object representation (a dict with 'type': 'object') inside ``value``."""
    if isinstance(value, dict):
        if value.get("type") == "object" and "id" in value:
            yield value
        for item in value.values():
            yield from _objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)
