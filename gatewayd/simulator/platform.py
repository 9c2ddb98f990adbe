"""The simulated Business Platform: the other side of REQ/RES, for app and platform developers.

Connected to the simulated broker as the platform user (``sim.json`` ``mqtt.platform``), it
answers every request on ``+/req/+/#`` the way docs/cloud.md tells a platform to: the
response's data sealed with the key from the request (AES-256-GCM,
:mod:`gatewayd.cloud.reqres_cipher`'s format, written here from the documentation's
side). Endpoints:

* the simulator's own, which a canned answer cannot replace (one is logged as not used):
  ``device/ownership`` (records a release, and tells :attr:`SimPlatform.on_release`: the
  provisioning side ends the hub's enrollment) and :attr:`SimPlatform.endpoints`
  (``provisioning/refresh``);
* canned: ``responses`` in the responses file (``sim.json`` ``platform.responses``), which
  app developers edit while the simulator runs: ``{"<endpoint>": {"status": 1, "code": 200,
  "data": <any JSON>}}``; a status 0 answer's data is sealed too (``{"message": ...}``);
* built in, unless a canned answer replaces them: ``echo`` (the request's data back),
  ``time`` (the platform's clock), ``rfid/authorize`` (``{"tag": ...}`` against the tag list
  in the responses file);
* anything else: status 0, code 404.

A request the file cannot answer (not JSON, a canned answer whose status is not 0 or 1, a
provisioning setting of the wrong kind: ``provisioning_model.read_settings``...) is
answered status 0, code 500, with what is wrong (``<file>: responses: <endpoint>: status:
must be 0 or 1, got 'yes'``) as its message, and the log records that as its ``error``:
the developer learns it from the hub, not from a timeout; the log says it once per message
(:class:`ProblemLog`) until the file is edited. So is a request over
``MAX_REQUEST`` bytes (docs/interfaces.md's limit), answered status 0, code 413, when its
id and key can be read (it is read up to ``MAX_READ`` bytes); its data is not logged.

Every exchange is recorded (the last ``MAX_LOG``) and served on a small loopback HTTP
control interface (``sim.json`` ``platform.control``): ``GET /log`` is what
``gatewayctl --sim DIR platform log`` shows. The platform runs in its own thread (paho's),
so a third-party platform can replace it: ``gatewayd --simulate --no-platform`` leaves the
platform user to whoever connects with it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paho.mqtt.enums import CallbackAPIVersion

from gatewayd.runtime.jsonbody import BadBody, loads

log = logging.getLogger(__name__)

MAX_LOG = 1000
MAX_REQUEST = 64 * 1024  # docs/interfaces.md §9: a request is at most 64 KiB
MAX_READ = 1024 * 1024  # a larger request is read for its id and key, up to this
DEFAULT_RESPONSES: dict[str, Any] = {
    "rfid": {"tags": ["04A1B2C3", "DEADBEEF"]},
    "responses": {
        "firmware/latest": {"status": 1, "code": 200,
                            "data": {"version": "1.2.0",
                                     "url": "https://fw.example.com/hub-1.2.0.bin"}},
        "billing/balance": {"status": 0, "code": 402, "data": {"message": "no credit left"}},
    },
}


def seal(key: bytes, value: Any) -> str:
    """base64(nonce || AES-256-GCM(key, JSON)) as docs/cloud.md specifies."""
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, json.dumps(value).encode(),
                                                        None)).decode()


Answer = tuple[int, int, Any]  # status, code, data (before sealing)
Endpoint = Callable[[str, Any], Answer]  # (device id, request data) -> answer
# (method, path, JSON body or None) -> (HTTP status, JSON body), or None: not this route
Route = Callable[[str, str, Any], tuple[int, Any] | None]
MAX_CONTROL_BODY = 64 * 1024
OWNERSHIP = "device/ownership"


class ProblemLog:
    """What is wrong with the responses file, each message logged once while the file stays
    as it is: not at every request of every hub (a batch polls every few seconds), and
    again once the file has been edited. The platform and its provisioning side share one
    (:func:`gatewayd.simulator.provisioning_ops.attach`), so a problem both meet, such as a
    ``provisioning/refresh`` reading bad settings, is one line too."""

    MAX = 64  # messages remembered per version of the file (one per endpoint, at most)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._version: tuple[int, bytes] | None = None
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def warn(self, message: str) -> None:
        try:  # a problem is rare, and the file small: read it once more to know its version
            version = (self.path.stat().st_mtime_ns,
                       hashlib.sha256(self.path.read_bytes()).digest())
        except OSError:
            version = None
        with self._lock:
            if version != self._version or len(self._logged) >= self.MAX:
                self._version, self._logged = version, set()
            if message in self._logged:
                return
            self._logged.add(message)
        log.warning("simulated platform: %s", message)


class SettingsError(ValueError):
    """The responses file cannot answer a request; the message names the file and key."""


class TooLarge(ValueError):
    """A request over ``MAX_REQUEST`` bytes; the message says its size and the limit."""


def json_kind(value: Any) -> str:
    """A value as a message shows it: text and short numbers as they are, else its kind."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and len(repr(value)) <= 24:
        return repr(value)
    return {dict: "an object", list: "an array", bool: "true or false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


class SimPlatform:
    def __init__(self, host: str, port: int, username: str, password: str,
                 responses: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.responses = responses
        self.clock = clock
        self.exchanges: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_LOG)
        self.ownership: list[dict[str, Any]] = []
        # More of the platform (its provisioning side): REQ/RES endpoints and control routes.
        self.endpoints: dict[str, Endpoint] = {}
        self.routes: list[Route] = []
        self.on_release: list[Callable[[str, Any], None]] = []  # (device id, request data)
        self._shadowed: set[str] = set()  # canned answers warned about: never used
        self.problems = ProblemLog(responses)
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-platform")
        self._client.username_pw_set(username, password)
        # Back soon after a broker restart: hubs wait for answers (token refreshes) meanwhile.
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._address = (host, port)
        self._http: ThreadingHTTPServer | None = None
        self._connected = threading.Event()
        if not responses.exists():
            responses.write_text(json.dumps(DEFAULT_RESPONSES, indent=2) + "\n")

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> SimPlatform:
        self._client.connect(*self._address)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.stop()
            raise RuntimeError("the simulated platform could not connect to the broker")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._http.serve_forever, name="sim-platform-http",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def control_url(self) -> str:
        assert self._http is not None
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.exchanges)

    # ---- MQTT -------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        client.subscribe("+/req/#", qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        try:
            self._answer(message.topic, bytes(message.payload))
        except Exception:  # the simulator must keep answering whatever one request did
            log.exception("simulated platform: answering %s failed", message.topic)

    def _answer(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/", 3)
        if len(parts) < 4 or parts[1] != "req":
            return
        root, _, device_id, endpoint = parts
        entry: dict[str, Any] = {"at": self.clock(), "root": root, "device_id": device_id,
                                 "endpoint": endpoint}
        request = _request(payload)
        if isinstance(request, str):  # no way to answer: no id or no key
            entry.update(error=request)
            self._record(entry)
            return
        request_id, key, data = request
        entry.update(id=request_id)
        try:
            if len(payload) > MAX_REQUEST:
                raise TooLarge(f"the request is {len(payload)} bytes, and a request is at "
                               f"most {MAX_REQUEST} bytes ({MAX_REQUEST // 1024} KiB)")
            entry.update(request=data)
            status, code, value = self._handle(endpoint, device_id, data)
        except TooLarge as exc:
            entry.update(error=str(exc))
            status, code, value = 0, 413, {"message": str(exc)}
        except SettingsError as exc:
            self.problems.warn(str(exc))
            entry.update(error=str(exc))
            status, code, value = 0, 500, {"message": str(exc)}
        except Exception:
            # Answered all the same: a hub waiting out its timeout would learn nothing.
            log.exception("simulated platform: answering %s failed", topic)
            entry.update(error="internal error of the simulated platform (see its log)")
            status, code, value = 0, 500, {"message": entry["error"]}
        response: dict[str, Any] = {"status": status, "code": code, "id": request_id}
        if status == 1 or value is not None:  # a hub drops a status 1 answer without data
            response["data"] = seal(key, value)
        self._client.publish(f"{root}/res/{device_id}/{endpoint}", json.dumps(response), qos=1)
        entry.update(status=status, code=code, response=value)
        self._record(entry)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.exchanges.append(entry)

    # ---- endpoints --------------------------------------------------------------------------

    def _handle(self, endpoint: str, device_id: str, data: Any) -> Answer:
        # The simulator's own first: a canned answer there would keep a release from ending
        # an enrollment, a refresh from issuing a token, and the provisioning side's records
        # would no longer be what the hubs were told.
        if endpoint in self.endpoints or endpoint == OWNERSHIP:
            self._warn_if_shadowed(endpoint)
            if endpoint in self.endpoints:
                return self.endpoints[endpoint](device_id, data)
            return self._release(device_id, data)
        canned = self._section("responses").get(endpoint)
        if canned is not None:  # before the built-ins: what a developer editing it expects
            return self._canned(endpoint, canned)
        if endpoint == "echo":
            return 1, 200, data
        if endpoint == "time":
            now = self.clock()
            return 1, 200, {"time": now, "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime(now))}
        if endpoint == "rfid/authorize":
            tag = data.get("tag") if isinstance(data, dict) else None
            if not isinstance(tag, str) or not tag:
                return 0, 400, {"message": "expected {\"tag\": \"<tag id>\"}"}
            tags = self._section("rfid").get("tags", [])
            if not isinstance(tags, list):
                raise SettingsError(f"{self.responses}: rfid: tags: must be an array of "
                                    f"tag ids, got {json_kind(tags)}")
            return 1, 200, {"tag": tag, "authorized": tag.upper() in {str(t).upper()
                                                                      for t in tags}}
        return 0, 404, {"message": f"unknown endpoint {endpoint!r}"}

    def _release(self, device_id: str, data: Any) -> Answer:
        if not isinstance(data, dict) or data.get("event") != "released":
            return 0, 400, {"message": "expected {\"event\": \"released\", ...}"}
        with self._lock:
            self.ownership.append({"at": self.clock(), "device_id": device_id, **data})
        for listener in self.on_release:
            listener(device_id, data)
        return 1, 200, {"released": device_id}

    def _warn_if_shadowed(self, endpoint: str) -> None:
        """A canned answer for one of the simulator's own endpoints is not used: say so
        (once per endpoint), or the developer wonders why the hub never gets it."""
        try:
            canned = endpoint in self._section("responses")
        except SettingsError:
            return  # answered without the file all the same
        with self._lock:
            if not canned:
                self._shadowed.discard(endpoint)
            elif endpoint not in self._shadowed:
                self._shadowed.add(endpoint)
                log.warning("simulated platform: %s: responses: %s: not used (the simulator "
                            "answers %s itself)", self.responses, endpoint, endpoint)

    def _canned(self, endpoint: str, canned: Any) -> Answer:
        """A canned answer as the hub takes one (docs/cloud.md), or SettingsError."""
        where = f"{self.responses}: responses: {endpoint}"
        if not isinstance(canned, dict):
            raise SettingsError(f"{where}: must be an object {{\"status\", \"code\", "
                                f"\"data\"}}, got {json_kind(canned)}")
        unknown = sorted(set(canned) - {"status", "code", "data"})
        if unknown:
            raise SettingsError(f"{where}: unknown key {unknown[0]!r} (an answer has status, "
                                "code and data)")
        status, code = canned.get("status", 1), canned.get("code", 200)
        if isinstance(status, bool) or status not in (0, 1):
            raise SettingsError(f"{where}: status: must be 0 or 1, got {json_kind(status)}")
        if isinstance(code, bool) or not isinstance(code, int):
            raise SettingsError(f"{where}: code: must be an integer (HTTP-style, such as "
                                f"200), got {json_kind(code)}")
        return status, code, canned.get("data")

    def _section(self, name: str) -> dict[str, Any]:
        return read_section(self.responses, name)


def read_section(path: Path, name: str) -> dict[str, Any]:
    """One section of the responses file, read for every request: edits take effect at
    once. Missing (the file or the section): empty. SettingsError naming the file."""
    try:
        settings = loads(path.read_bytes(), str(path), located=True)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SettingsError(f"{path}: unreadable ({exc.strerror})") from None
    except BadBody as exc:
        raise SettingsError(f"{path}: {exc.in_file}") from None
    if not isinstance(settings, dict):
        raise SettingsError(f"{path}: must be a JSON object, got {json_kind(settings)}")
    section = settings.get(name, {})
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: {name}: must be an object, got {json_kind(section)}")
    return section


def _request(payload: bytes) -> tuple[str, bytes, Any] | str:
    """(id, key, data) of a request, or why it cannot be answered."""
    if len(payload) > MAX_READ:
        return (f"the request is {len(payload)} bytes, too large to read (a request is at "
                f"most {MAX_REQUEST} bytes)")
    try:
        request = loads(payload, "the request")
    except BadBody as exc:  # also nesting and digits, which json.loads raises past this
        return str(exc)
    if not isinstance(request, dict) or not isinstance(request.get("id"), str):
        return "no id"
    try:
        key = base64.b64decode(str(request.get("key", "")), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        return "no 32-byte key"
    return request["id"], key, request.get("data")


def _handler(platform: SimPlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/log":
                self._send(200, {"exchanges": platform.log()})
            else:
                self._route("GET", None)

        def do_POST(self) -> None:
            raw = self.headers.get("Content-Length") or "0"
            # int() would take " 12", "1_2" and "-1" (which reads until the client hangs up)
            if not (raw.isascii() and raw.isdigit()):
                self._send(400, {"error": {"code": "invalid", "message": "Content-Length: "
                                           f"must be a number of bytes, got {raw[:40]!r}"}})
                return
            length = int(raw) if len(raw) < 10 else MAX_CONTROL_BODY + 1
            if length > MAX_CONTROL_BODY:
                self._send(413, {"error": {"code": "too-large", "message": "body: more than "
                                           f"{MAX_CONTROL_BODY // 1024} KiB"}})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (ValueError, RecursionError):  # decoding, digits, nesting
                self._send(400, {"error": {"code": "invalid", "message": "body: not JSON"}})
                return
            self._route("POST", body)

        def _route(self, method: str, body: Any) -> None:
            path = self.path.split("?")[0]
            for route in platform.routes:
                answer = route(method, path, body)
                if answer is not None:
                    self._send(*answer)
                    return
            self._send(404, {"error": {"code": "not-found", "message": self.path}})

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("simulated platform control: " + format, *args)

    return Handler
