"""Mutation testing, the short form CI runs (the long form is ``make mutants``;
docs/mutation-testing.md describes both).

A fixed sample of one-line mutations of the rules the docs promise: the nine that issue 20
found no test failing for, and at least one more in each module ``make mutants`` covers.
Each is applied to a copy of the tree (the work tree is never touched) and the test named
for it must fail there. A control run shows that the unmutated copy passes. No base commit
is needed: the sample is this file. Budget: 5 minutes on CI's 2 cores (about 1.5 minutes
when the machine is quiet).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@dataclass(frozen=True)
class Mutant:
    what: str  # the broken promise, as a user would notice it
    path: str
    old: str
    new: str
    test: str  # the test that must fail


SAMPLE = [
    # ---- the nine of issue 20 ----------------------------------------------------------------
    Mutant("a valid 8-character passphrase refused",
           "gatewayd/credentials.py", "if not 8 <= len(value) <= 63:",
           "if not 9 <= len(value) <= 63:",
           "tests/test_credentials.py::test_valid_passphrases_are_accepted"),
    Mutant("a second BLE request during an attempt answers 403 instead of 409",
           "gatewayd/onboarding/pairing.py",
           "    if machine.busy:\n        raise PairingBusy(BUSY_MESSAGE)\n"
           "    if not machine.pairing_open and not (admin and machine.repairable):\n"
           "        raise NotInPairingMode(f\"This hub is already paired. {closed_hint(machine)}\")"
           "\n",
           "    if not machine.pairing_open and not (admin and machine.repairable):\n"
           "        raise NotInPairingMode(f\"This hub is already paired. {closed_hint(machine)}\")"
           "\n    if machine.busy:\n        raise PairingBusy(BUSY_MESSAGE)\n",
           "tests/test_ble_secure.py::"
           "test_a_second_pair_request_during_an_attempt_is_busy_not_already_paired"),
    Mutant("the hotspot vanishes under a person typing in the panel",
           "gatewayd/onboarding/offline.py",
           "            if not overdue and self.clock() - self.last_activity"
           " < cfg.retry_interval:\n"
           "                continue  # someone is on the hotspot portal right now\n", "",
           "tests/test_onboarding_machine.py::"
           "test_periodic_retry_waits_while_someone_uses_the_portal"),
    Mutant("a request that waited for the uplink starts a second attempt",
           "gatewayd/onboarding/machine.py",
           "            check_open(self, admin=request.admin)\n", "",
           "tests/test_onboarding_machine.py::"
           "test_a_request_that_waited_for_the_uplink_is_refused_busy_if_another_began"),
    Mutant("passphrase and token in the log",
           "gatewayd/onboarding/conclusion.py", 'log.info("paired: %s", state.redacted())',
           'log.info("paired: %s", state)',
           "tests/test_onboarding_machine.py::"
           "test_no_passphrase_or_token_reaches_the_log_of_a_pairing"),
    Mutant("a removed device's $state cleared last",
           "gatewayd/cloud/publisher.py", 'key=lambda t: (not t.endswith("/$state"), t)',
           'key=lambda t: (t.endswith("/$state"), t)',
           "tests/test_publisher.py::"
           "test_removing_a_device_clears_its_state_first_then_everything_it_published"),
    Mutant("a bulb reports 65535 mireds",
           "gatewayd/zigbee/mapping.py", "    if mireds in (0, 0xFFFF):",
           "    if mireds in (0,):",
           "tests/test_zigbee_mapping.py::"
           "test_colour_temperature_in_kelvin_with_the_invalid_value"),
    Mutant("a remote setting a level reports brightness-up/down",
           "gatewayd/zigbee/mapping.py",
           'if command.startswith(("step", "move")) and not command.startswith("move_to"):',
           'if command.startswith(("step", "move")):',
           "tests/test_zigbee_mapping.py::test_dimmer_remote_commands_become_events"),
    Mutant("dimmer levels out of 255 instead of 254",
           "gatewayd/zigbee/mapping.py", "return level and max(1, round(level * 100 / 254))",
           "return level and max(1, round(level * 100 / 255))",
           "tests/test_zigbee_mapping.py::test_brightness_is_the_zcl_level_out_of_254"),
    Mutant("an idle phone keeps its BLE session forever",
           "gatewayd/ble/secure_service.py", "        return session.last + IDLE_SECONDS",
           "        return session.last + 1e9",
           "tests/test_ble_secure.py::"
           "test_an_idle_session_expires_after_300_seconds_and_each_request_renews_it"),
    Mutant("a half-open BLE handshake never expires",
           "gatewayd/ble/secure_service.py",
           "            return session.started + HANDSHAKE_SECONDS",
           "            return session.started + 1e9",
           "tests/test_ble_secure.py::test_a_handshake_expires_after_30_seconds"),
    Mutant("the BLE window closes in the middle of an attempt",
           "gatewayd/ble_commission.py",
           "            if self.onboarding.busy:\n                # Never pull",
           "            if False:\n                # Never pull",
           "tests/test_ble_commission.py::"
           "test_window_stays_open_while_an_attempt_runs_past_its_time"),
    # ---- one or more in each other module ------------------------------------------------------
    Mutant("a networks reply too long for one frame",
           "gatewayd/ble/secure_messages.py", "if used + size > MAX_MESSAGE_LEN:",
           "if used + size > MAX_MESSAGE_LEN + 100:",
           "tests/test_ble_secure.py::"
           "test_the_networks_reply_holds_as_many_of_the_strongest_as_one_frame_carries"),
    Mutant("a failed attempt of a paired hub forgets it is paired",
           "gatewayd/onboarding/table.py",
           "    (State.CONNECTING, Event.FAILED_SAVED): State.OFFLINE,",
           "    (State.CONNECTING, Event.FAILED_SAVED): State.UNPAIRED,",
           "tests/test_onboarding_machine.py::"
           "test_offline_hub_retries_its_network_every_interval_without_anyone_on_the_portal"),
    Mutant("a state file of exactly 256 KiB refused",
           "gatewayd/state.py", "if st.st_size > MAX_STATE_BYTES:",
           "if st.st_size >= MAX_STATE_BYTES:",
           "tests/test_state.py::test_state_files_over_256_kib_are_refused_unread"),
    Mutant("a state file others can read stays readable",
           "gatewayd/state.py", "if st.st_mode & 0o077:", "if st.st_mode & 0o070:",
           "tests/test_state.py::test_a_state_file_others_could_read_is_made_private_again"),
    Mutant("a 9-digit setup code in state.json accepted",
           "gatewayd/identity.py", "len(code) == 8 and code.isdigit()",
           "len(code) >= 8 and code.isdigit()",
           "tests/test_state.py::test_each_part_of_the_state_is_checked"),
    Mutant("the state file written world-readable",
           "gatewayd/runtime/atomicfile.py", "        os.fchmod(fd, mode)",
           "        os.fchmod(fd, 0o644)",
           "tests/test_state.py::test_first_open_creates_private_state"),
    Mutant("the REQ/RES key derived without its label",
           "gatewayd/cloud/reqres_cipher.py",
           'info=INFO_PREFIX + request_id.encode("utf-8"))',
           'info=request_id.encode("utf-8"))',
           "tests/test_reqres.py::test_documented_example_decrypts"),
    Mutant("a replayed BLE frame accepted",
           "gatewayd/ble/secure_protocol.py", 'if int.from_bytes(seq, "big") != self.received:',
           'if int.from_bytes(seq, "big") > self.received:',
           "tests/test_ble_secure.py::test_replay_tampering_and_strangers_end_the_session"),
    Mutant("an SSID of 33 bytes accepted",
           "gatewayd/credentials.py", "if not 1 <= size <= 32:", "if not 1 <= size <= 33:",
           "tests/test_credentials.py::test_ssids_are_refused_by_their_utf8_size_and_nul"),
    Mutant("port 65535 refused",
           "gatewayd/credentials.py", "if not low <= value <= 65535:",
           "if not low <= value < 65535:",
           "tests/test_credentials.py::test_ports_1_to_65535_are_accepted"),
    Mutant("energy meters divide by their multiplier (a converter built at import)",
           "gatewayd/zigbee/mapping.py",
           "return round(int(raw) * int(mul) / (int(div) or 1), digits)",
           "return round(int(raw) * int(mul) * (int(div) or 1), digits)",
           "tests/test_zigbee_mapping.py::"
           "test_electrical_values_use_the_clusters_multiplier_and_divisor"),
    Mutant("a full outbox drops the newest instead of the oldest",
           "gatewayd/cloud/publisher.py",
           "for k, p in self._items.items() if not p.first",
           "for k, p in reversed(self._items.items()) if not p.first",
           "tests/test_publisher.py::test_a_full_outbox_drops_the_oldest_and_counts"),
    Mutant("a flood of command errors pushes the hub's own values out of the outbox",
           "gatewayd/cloud/publisher.py", "            if self._expendable:\n",
           "            if False:\n",
           "tests/test_publisher.py::"
           "test_a_full_outbox_drops_expendable_entries_first_oldest_first"),
    Mutant("devices alike each keep a set of their retained topics again",
           "gatewayd/cloud/retained.py", "self._of[device_id] = joined.suffixes",
           "self._of[device_id] = new",
           "tests/test_cloud_retained.py::test_devices_that_sent_the_same_topics_share_one_set"),
    Mutant("a file written behind the loop readable by others",
           "gatewayd/runtime/writebehind.py", "mode: int = 0o600,", "mode: int = 0o644,",
           "tests/test_cloud_devices_file.py::"
           "test_the_loop_goes_on_while_the_record_is_written_and_the_latest_lands"),
    Mutant("a newcomer evicts the one honest client instead of a hoarding address",
           "gatewayd/runtime/webserver.py", "-held[ch.addr[0]],", "held[ch.addr[0]],",
           "tests/test_webserver_limits.py::"
           "test_the_connection_given_up_for_a_newcomer_is_from_the_address_holding_most"),
    Mutant("a refusal of an absolute-form /api/ request answered in plain text",
           "gatewayd/runtime/requesthead.py", "            target = urlsplit(target).path\n",
           "            pass\n",
           "tests/test_portal_refusals.py::"
           "test_a_refusal_answers_in_the_format_of_the_path_on_the_request_line"),
    Mutant("a removed Zigbee device kept in memory for good",
           "gatewayd/zigbee/removals.py", "                let_go(device)\n",
           "                pass\n",
           "tests/test_zigbee_removals.py::test_removed_devices_are_let_go_of"),
    Mutant("bellows' traceback in the log when a timed-out /set's send fails",
           "gatewayd/zigbee/ash_closing.py",
           "    if not send.cancelled() and (exc := send.exception()) is not None:",
           "    if False and (exc := send.exception()) is not None:",
           "tests/test_zigbee_ash_closing.py::"
           "test_a_send_abandoned_by_a_timed_out_set_fails_quietly_when_the_link_drops"),
    Mutant("the JSON API's refusals answered in plain text",
           "gatewayd/portal/refusals.py", 'return path.startswith("/api/")',
           'return path.startswith("/api/v0/")',
           "tests/test_portal_refusals.py::"
           "test_a_body_over_the_limit_is_refused_in_the_hubs_words"),
]


def copy_tree(root: Path) -> Path:
    for name in ("gatewayd", "tests", "docs"):
        shutil.copytree(REPO / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def run_test(root: Path, test: str) -> subprocess.CompletedProcess[str]:
    # The copy first on the path, for the tests and for every process they start.
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-p", "no:randomly", test], cwd=root, env=env, capture_output=True,
                          text=True, timeout=150, check=False)


@pytest.mark.parametrize("mutant", SAMPLE, ids=[m.what for m in SAMPLE])
def test_the_named_test_kills_the_mutant(mutant: Mutant, tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    source = (root / mutant.path).read_text()
    assert source.count(mutant.old) == 1, f"the mutation no longer applies to {mutant.path}"
    (root / mutant.path).write_text(source.replace(mutant.old, mutant.new))
    done = run_test(root, mutant.test)
    assert done.returncode == 1, (  # 1: tests ran and failed (2+: the run itself broke)
        f"{mutant.test} did not fail with '{mutant.what}' ({done.returncode}):\n"
        f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    assert "1 failed" in done.stdout or "failed" in done.stdout.splitlines()[-1]


def test_the_unmutated_copy_passes(tmp_path: Path) -> None:
    """The control: the sample's tests pass in the same kind of copy without a mutation
    (so a kill above is the mutation's doing, not the copy's)."""
    root = copy_tree(tmp_path)
    tests = sorted({m.test for m in SAMPLE})
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=root, env=env, capture_output=True, text=True,
                          timeout=170, check=False)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_sample_reaches_every_module_make_mutants_covers() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    covered = {path for group in config["tool"]["gatewayd-mutants"]["group"]
               for path in group["modules"]}
    assert {m.path for m in SAMPLE} == covered
