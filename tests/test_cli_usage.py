"""gatewayd's own usage errors (interfaces.md §2.1): exit 2 before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd import cli


@pytest.mark.parametrize("flags", [["--workdir", "WORKDIR"], ["--no-platform"], ["--ethernet"],
                                   ["--no-platform", "--ethernet"]])
def test_simulator_options_without_simulate_are_refused_before_anything_starts(
        flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: they were ignored and the real hub started (a state directory, the system's
    NetworkManager and BlueZ, port 80) where a developer meant the simulator."""
    state = tmp_path / "state"
    config = tmp_path / "gatewayd.toml"
    config.write_text(f"[hub]\nstate_dir = \"{state}\"\n")
    argv = ["--config", str(config)] + [str(tmp_path / "w") if f == "WORKDIR" else f
                                        for f in flags]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    named = " and ".join(f for f in flags if f.startswith("--"))
    assert f"{named} only work with --simulate (without it gatewayd runs the real hub)" in err
    assert not state.exists() and not (tmp_path / "w").exists()
