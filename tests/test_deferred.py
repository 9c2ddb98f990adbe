"""Deferred modules (gatewayd/runtime/deferred.py): bound by ``import``, executed on first
use, once, in place; the Zigbee radio's preload deferring what only OTA uses; and the
daemon's entry deferring what paho imports without using it.

Each case runs in a fresh interpreter: what it checks is what ``sys.modules`` holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from gatewayd import cli
from tests.cloud_helpers import creds_for, make_broker
from tests.helpers import REPO


def _run(code: str, path: Path | None = None) -> dict[str, object]:
    env_path = [str(REPO)] + ([str(path)] if path else [])
    script = f"import sys; sys.path[:0] = {env_path!r}\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_deferred_module_runs_on_first_use_once_and_in_place(tmp_path: Path) -> None:
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nos.environ['RUNS'] += 'x'\nVALUE = 42\n")
    (pkg / "sub.py").write_text("from probe_pkg import VALUE\nDOUBLE = VALUE * 2\n")
    result = _run("""
        import json, os
        os.environ['RUNS'] = ''
        from gatewayd.runtime import deferred
        names = deferred.defer('probe_pkg', 'no_such_module_here', 'json')
        import probe_pkg
        before = (os.environ['RUNS'], deferred.executed('probe_pkg'))
        same = sys.modules['probe_pkg'] is probe_pkg
        value = probe_pkg.VALUE
        import probe_pkg.sub
        try:
            import no_such_module_here
            missing = 'imported'
        except ImportError:
            missing = 'ImportError'
        print(json.dumps({'names': names, 'before': before, 'same': same, 'value': value,
                          'runs': os.environ['RUNS'], 'sub': probe_pkg.sub.DOUBLE,
                          'executed': deferred.executed('probe_pkg'), 'missing': missing}))
    """, tmp_path)
    assert result == {"names": ["probe_pkg"],  # json was imported already: left alone
                      "before": ["", False], "same": True, "value": 42, "runs": "x",
                      "sub": 84, "executed": True, "missing": "ImportError"}


def test_a_deferred_submodule_is_bound_on_its_package_unexecuted(tmp_path: Path) -> None:
    pkg = tmp_path / "probe_outer"
    pkg.mkdir()  # the package imports the submodule at its top, as zigpy.ota does
    (pkg / "__init__.py").write_text("import probe_outer.heavy\nLIGHT = 1\n")
    (pkg / "heavy.py").write_text("import os\nos.environ['RUNS'] += 'h'\nVALUE = 7\n")
    result = _run("""
        import json, os
        os.environ['RUNS'] = ''
        from gatewayd.runtime import deferred
        names = deferred.defer('probe_outer.heavy', 'probe_outer.absent', 'json.decoder')
        import probe_outer
        before = (os.environ['RUNS'], deferred.executed('probe_outer'),
                  deferred.executed('probe_outer.heavy'))
        bound = vars(probe_outer)['heavy'] is sys.modules['probe_outer.heavy']
        value = probe_outer.heavy.VALUE
        sys.modules.pop('probe_outer.heavy')  # deferred once: imported again, it runs
        import probe_outer.heavy
        print(json.dumps({'names': names, 'before': before, 'bound': bound, 'value': value,
                          'executed': deferred.executed('probe_outer.heavy'),
                          'runs': os.environ['RUNS']}))
    """, tmp_path)
    assert result == {"names": ["probe_outer.heavy"], "before": ["", True, False],
                      "bound": True, "value": 7, "executed": True, "runs": "hh"}


def test_zigbee_preload_defers_what_only_ota_uses_unless_ota_is_on(tmp_path: Path) -> None:
    code = """
        import asyncio, json
        from pathlib import Path
        from gatewayd.config import ZigbeeConfig
        from gatewayd.runtime import deferred
        from gatewayd.zigbee import radio
        cfg = ZigbeeConfig(enabled=True, radio='virtual', ota=%s)
        radio.preload(cfg.radio, ota=cfg.ota)

        async def run():  # a network formed, started and stopped: none of it uses OTA
            app = await radio.start_controller(cfg, Path(%r))
            providers = len(app.ota._providers)
            await radio.shutdown_controller(app)
            return providers

        providers = asyncio.run(run())
        state = {m: deferred.executed(m) for m in radio.OTA_ONLY_MODULES}
        import zigpy.ota.providers as providers_module  # what zigpy reaches for with OTA on
        works = (providers_module.Tradfri.__name__,
                 providers_module.aiohttp.ClientSession.__name__,
                 providers_module.jsonschema.validate.__name__)
        print(json.dumps({'state': state, 'providers': providers, 'works': works}))
    """
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off = _run(code % ("False", str(tmp_path / "off")))
    on = _run(code % ("True", str(tmp_path / "on")))
    works = ["Tradfri", "ClientSession", "validate"]
    assert off == {"state": dict.fromkeys(["zigpy.ota.providers", "aiohttp", "jsonschema"], False),
                   "providers": 0, "works": works}
    assert on["state"] == dict.fromkeys(["zigpy.ota.providers", "aiohttp", "jsonschema"], True)
    assert on["providers"] > 0 and on["works"] == works


def test_the_daemon_entry_defers_what_paho_imports_and_never_uses(tmp_path: Path) -> None:
    """``gatewayd``'s daemon path imports the daemon (paho with it) with urllib.request
    bound but not run; a state directory it cannot use ends the run right after."""
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the state directory should be\n")
    config = tmp_path / "gatewayd.toml"
    config.write_text(f'[hub]\ndevice_id = "aa-bb-cc-dd-ee-ff"\nstate_dir = "{not_a_dir}"\n'
                      f'runtime_dir = "{tmp_path / "run"}"\n')
    result = _run(f"""
        import json
        from gatewayd import cli
        from gatewayd.config import load_config
        from gatewayd.runtime import deferred
        from gatewayd.runtime.logsetup import Redactor
        code = cli.run_daemon(load_config({str(config)!r}), Redactor())
        print(json.dumps({{'code': code, 'paho': 'paho.mqtt.client' in sys.modules,
                          'daemon': 'gatewayd.daemon' in sys.modules,
                          'bound': 'urllib.request' in sys.modules,
                          'executed': deferred.executed('urllib.request')}}))
    """)
    assert result == {"code": cli.EXIT_CONFIG, "paho": True, "daemon": True, "bound": True,
                      "executed": False}


def test_paho_connects_publishes_and_disconnects_without_running_urllib_request(
        tmp_path: Path) -> None:
    """What makes the deferral above safe: paho reads a proxy with urllib.request only
    when PySocks is installed (it is not a dependency). A QoS 1 publication to a real
    mosquitto, acknowledged, leaves the module unexecuted; using it then still works."""
    broker = make_broker(tmp_path / "broker")
    creds = creds_for(broker)
    try:
        result = _run(f"""
            import json, threading
            from gatewayd import cloud
            from gatewayd.runtime import deferred
            assert cloud.defer_unused_imports() == ['urllib.request']
            import paho.mqtt.client as mqtt
            acked = threading.Event()
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
            client.username_pw_set({creds.username!r}, {creds.token!r})
            client.on_publish = lambda *args: acked.set()
            client.connect({creds.host!r}, {creds.port})
            client.loop_start()
            client.publish({creds.username + "/probe"!r}, b"1", qos=1)
            delivered = acked.wait(30)
            client.disconnect()
            client.loop_stop()
            executed = deferred.executed('urllib.request')
            import urllib.request
            print(json.dumps({{'socks': mqtt.socks is None, 'delivered': delivered,
                              'executed': executed,
                              'works': callable(urllib.request.getproxies)}}))
        """)
    finally:
        broker.stop()
    assert result == {"socks": True, "delivered": True, "executed": False, "works": True}


def test_a_deferred_module_is_whole_to_other_threads_and_imports_go_on_meanwhile(
        tmp_path: Path) -> None:
    """While one thread executes a deferred module, another thread's new import
    completes (the import system calls finders with its own lock held), and a third
    thread asking the module for a name waits for the whole module."""
    (tmp_path / "sync_probe.py").write_text(
        "import threading\nstarted, release = threading.Event(), threading.Event()\n")
    (tmp_path / "slow_probe.py").write_text(
        "import sync_probe\nsync_probe.started.set()\nassert sync_probe.release.wait(30)\n"
        "VALUE = 1\n")
    (tmp_path / "other_probe.py").write_text("OTHER = 2\n")
    result = _run("""
        import json, threading
        from gatewayd.runtime import deferred
        import sync_probe
        deferred.defer('slow_probe')
        import slow_probe
        seen = {}
        def use(key):
            try:
                seen[key] = slow_probe.VALUE
            except Exception as exc:
                seen[key] = repr(exc)
        def new_import():
            import other_probe
            seen['other'] = other_probe.OTHER
        first = threading.Thread(target=use, args=('first',))
        first.start()
        assert sync_probe.started.wait(30)
        importer = threading.Thread(target=new_import)
        importer.start()
        importer.join(20)
        imported_meanwhile = not importer.is_alive()
        second = threading.Thread(target=use, args=('second',))
        second.start()
        second.join(0.2)  # the check: it must still be waiting, not have failed
        waited = second.is_alive()
        sync_probe.release.set()
        first.join(30), second.join(30), importer.join(30)
        print(json.dumps({'seen': seen, 'imported_meanwhile': imported_meanwhile,
                          'waited': waited}))
    """, tmp_path)
    assert result == {"seen": {"first": 1, "second": 1, "other": 2},
                      "imported_meanwhile": True, "waited": True}


def test_a_deferred_module_that_raises_is_unbound_and_not_run_again(tmp_path: Path) -> None:
    (tmp_path / "failing_probe.py").write_text(
        "import os\nos.environ['RUNS'] += 'f'\nraise RuntimeError('boom')\n")
    (tmp_path / "found_probe.py").write_text("import os\nos.environ['RUNS'] += 'p'\nX = 3\n")
    result = _run("""
        import importlib.util, json, os
        os.environ['RUNS'] = ''
        from gatewayd.runtime import deferred
        deferred.defer('failing_probe', 'found_probe')
        import failing_probe
        errors = []
        for _ in range(2):
            try:
                failing_probe.X
            except Exception as exc:
                errors.append(type(exc).__name__ + ': ' + str(exc))
        bound = 'failing_probe' in sys.modules
        importlib.util.find_spec('found_probe')  # looking does not use the deferral up
        import found_probe
        before = deferred.executed('found_probe')
        print(json.dumps({'errors': errors, 'bound': bound, 'runs': os.environ['RUNS'],
                          'before': before, 'x': found_probe.X}))
    """, tmp_path)
    assert result == {
        "errors": ["RuntimeError: boom", "ImportError: module 'failing_probe' failed when "
                   "first used: RuntimeError('boom')"],
        "bound": False, "runs": "f", "before": False, "x": 3}


def test_a_name_taken_with_from_import_is_a_stand_in_until_used(tmp_path: Path) -> None:
    """``from mod import Name`` with ``Name`` forwarded binds a stand-in and leaves the
    module unexecuted; the stand-in's first use (attribute, call, isinstance) runs it."""
    (tmp_path / "fwd_heavy.py").write_text(
        "import os\nos.environ['RUNS'] += 'h'\nclass Profile:\n"
        "    @classmethod\n    def make(cls, v):\n        return cls()\n")
    (tmp_path / "fwd_user.py").write_text("from fwd_heavy import Profile\n"
                                          "def load(v):\n    return Profile.make(v)\n")
    result = _run("""
        import json, os
        os.environ['RUNS'] = ''
        from gatewayd.runtime import deferred
        deferred.defer('fwd_heavy', forward={'fwd_heavy': ('Profile',)})
        import fwd_user
        before = (os.environ['RUNS'], deferred.executed('fwd_heavy'))
        made = fwd_user.load(1)
        import fwd_heavy
        real = fwd_heavy.Profile
        print(json.dumps({'before': before, 'runs': os.environ['RUNS'],
                          'type': type(made) is real,
                          'isinstance': isinstance(made, fwd_user.Profile),
                          'subclass': issubclass(real, fwd_user.Profile),
                          'call': type(fwd_user.Profile()) is real,
                          'executed': deferred.executed('fwd_heavy')}))
    """, tmp_path)
    assert result == {"before": ["", False], "runs": "h", "type": True, "isinstance": True,
                      "subclass": True, "call": True, "executed": True}


def test_the_daemon_entry_defers_networkmanagers_settings_dataclasses() -> None:
    """sdbus-networkmanager imports its settings dataclasses for ConnectionProfile only:
    the daemon's entry leaves them unexecuted with the interfaces the hub uses imported,
    and the profile methods still get the real class when called."""
    result = _run("""
        import json
        from gatewayd import cli
        from gatewayd.runtime import deferred
        names = cli.defer_unused_imports()
        from sdbus_async.networkmanager import (AccessPoint, NetworkConnectionSettings,
                                                NetworkDeviceGeneric, NetworkManager)
        import sdbus_async.networkmanager.interfaces_other as other
        before = deferred.executed(cli.NM_SETTINGS)
        dataclasses = [m for m in sys.modules if m.startswith(cli.NM_SETTINGS + '.')]
        profile = other.ConnectionProfile.from_dbus({'connection': {
            'id': ('s', 'x'), 'uuid': ('s', 'u'), 'type': ('s', '802-11-wireless')}})
        from sdbus_async.networkmanager.settings import ConnectionProfile
        print(json.dumps({'names': names, 'before': before, 'dataclasses': dataclasses,
                          'real': type(profile) is ConnectionProfile,
                          'id': profile.connection.connection_id,
                          'executed': deferred.executed(cli.NM_SETTINGS)}))
    """)
    assert result == {"names": ["urllib.request", "sdbus_async.networkmanager.settings",
                                "werkzeug.serving"],
                      "before": False, "dataclasses": [], "real": True, "id": "x",
                      "executed": True}


def test_the_daemon_entry_defers_werkzeugs_development_server() -> None:
    """werkzeug and Flask import werkzeug.serving (and http.server with it) for app.run()
    and the flask command: after the daemon's entry, a Flask app answers requests without
    running it, and run_simple, asked for, is werkzeug's."""
    result = _run("""
        import json
        from gatewayd import cli
        from gatewayd.runtime import deferred
        cli.defer_unused_imports()
        import flask, werkzeug
        app = flask.Flask('probe')
        app.add_url_rule('/', 'index', lambda: flask.jsonify(ok=True))
        answer = app.test_client().get('/').get_json()
        before = (deferred.executed(cli.WEB_SERVER), 'http.server' in sys.modules)
        name = werkzeug.run_simple.__globals__['__name__']
        print(json.dumps({'answer': answer, 'before': before, 'name': name,
                          'executed': deferred.executed(cli.WEB_SERVER)}))
    """)
    assert result == {"answer": {"ok": True}, "before": [False, False],
                      "name": "werkzeug.serving", "executed": True}


def test_zigbee_preload_defers_crccheck_and_an_install_code_still_checks() -> None:
    """zigpy.util takes CrcX25 from crccheck for install codes only: after the preload
    crccheck is bound, not run; checking a code (the Zigbee specification's example, and
    the same code with a wrong CRC) runs it and checks as before."""
    result = _run("""
        import json
        from gatewayd.runtime import deferred
        from gatewayd.zigbee import radio
        radio.preload('virtual')
        import zigpy.util
        before = {m: deferred.executed(m) for m in radio.INSTALL_CODE_ONLY_MODULES}
        code = bytes.fromhex('83FED3407A939723A5C639B26916D505C3B5')
        key = zigpy.util.convert_install_code(code).serialize().hex()
        try:
            zigpy.util.convert_install_code(code[:-1] + b'\\x00')
            wrong = 'accepted'
        except ValueError as exc:
            wrong = str(exc).split(':')[0]
        print(json.dumps({'before': before, 'key': key, 'wrong': wrong,
                          'after': deferred.executed('crccheck.crc')}))
    """)
    assert result == {"before": {"crccheck": False, "crccheck.crc": False},
                      "key": "66b6900981e1ee3ca4206b6b861c02bb",
                      "wrong": "Invalid install code CRC", "after": True}
