"""Deferred modules (gatewayd/runtime/deferred.py): bound by ``import``, executed on first
use, once, in place; and the Zigbee radio's preload deferring what only OTA uses.

Each case runs in a fresh interpreter: what it checks is what ``sys.modules`` holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

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


def test_zigbee_preload_defers_what_only_ota_uses_unless_ota_is_on() -> None:
    code = """
        import json
        from gatewayd.runtime import deferred
        from gatewayd.zigbee import radio
        radio.preload('virtual', ota=%s)
        state = {m: deferred.executed(m) for m in radio.OTA_ONLY_MODULES}
        import zigpy.ota.providers as providers  # what zigpy would reach for with OTA on
        works = providers.aiohttp.ClientSession.__name__, providers.jsonschema.validate.__name__
        print(json.dumps({'state': state, 'works': works}))
    """
    off, on = _run(code % "False"), _run(code % "True")
    assert off == {"state": {"aiohttp": False, "jsonschema": False},
                   "works": ["ClientSession", "validate"]}
    assert on == {"state": {"aiohttp": True, "jsonschema": True},
                  "works": ["ClientSession", "validate"]}
