"""Starting the hub's Zigbee network on the stick in the port, whichever stick it is.

zigpy starts the network the stick holds, forms one on a blank stick with nothing in
``zigbee.db``, and restores ``zigbee.db``'s latest network backup onto a blank stick. The
hub asks it to compare the stick's network with that backup (zigpy's
``validate_network_settings``; :func:`~gatewayd.zigbee.radio.zigpy_config`) and decides
what zigpy leaves to its caller:

* **A stick of another network** (another PAN id, extended PAN id or network key: a stick
  from another hub or a Zigbee2MQTT setup): refused, the radio down with
  :func:`foreign_words`. Before, zigpy took it as it was: the hub reported ``ready`` on that
  network, its own devices ``ready`` though out of reach, the other network's coordinator
  and devices became children and ``zigbee.db`` gained the other network as its newest
  backup. Waiting does not mend it (retried once a minute, like a stick of another type);
  the hub's stick plugged back in, or ``gatewayctl reset --full`` (a new network, on this
  stick), does. zigpy's exception is never logged: its text holds both networks' keys.
* **A stick that cannot take the old stick's address** (a blank replacement: zigpy's restore
  asks bellows to write the old coordinator's IEEE address, which a firmware without a
  rewritable address refuses, ``DestructiveWriteNetworkSettings`` when it could burn it
  once, ``CannotWriteNetworkSettings`` when that is done): the backup is restored keeping
  the stick's own address (zigpy's ``EUI64.UNKNOWN``, as its own ``form_network`` does).
  Burning the address is not done behind the owner's back: it can be done once per stick.
  Before, the radio stayed down for good ("check that it is a bellows radio").
* **The hub's network on a stick that is not the one it was last backed up from** (the old
  stick plugged back in after a replacement; or its settings otherwise differ from the
  backup): the backup is restored onto it the same way, the frame counters taken past
  both the stick's and the backup's, so that no device takes its frames for replays. So is
  a network of an older backup in ``zigbee.db`` (a full reset deletes them all, so only the
  hub ran it: before this check, a hub that had adopted another network's stick refused
  its own stick once that was back).

After a restore the network runs under the stick's own address: the bridge has every
device set up again to report to it (:mod:`~gatewayd.zigbee.coordinators`), and says so.
Imported only once a radio runs (zigpy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zigpy.backups
import zigpy.exceptions
import zigpy.types

from gatewayd.zigbee.radio_errors import RadioError

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication
    from zigpy.backups import NetworkBackup

log = logging.getLogger(__name__)


class RestoreFailed(RadioError):
    """The hub's network could not be written onto the stick."""


@dataclass(frozen=True)
class Mismatch:
    """What the stick holds (None: no network) against ``zigbee.db``'s latest backup."""

    stick: NetworkBackup | None
    hub: NetworkBackup
    older: bool = False  # hub: an older backup than zigbee.db's latest (another network's)


async def start_network(app: ControllerApplication, path: str) -> None:
    """``app.startup(auto_form=True)`` (connected, network up); see the module's text.
    Raises :class:`RadioError` for another network's stick and a restore that failed,
    and whatever zigpy raised otherwise."""
    mismatch = await _startup(app)
    if mismatch is None:
        return
    if mismatch.stick is not None and not same_network(mismatch.stick, mismatch.hub):
        ran = [b for b in app.backups.backups if same_network(mismatch.stick, b)]
        if not ran:
            raise RadioError(foreign_words(path, mismatch.stick, mismatch.hub))
        mismatch = Mismatch(mismatch.stick, ran[-1], older=True)  # the hub ran it (above)
    # startup() shut the radio down when it failed: connect again and restore
    try:
        await app.connect()
        await app.backups.restore_backup(_onto_this_stick(mismatch), allow_incomplete=True)
        await app.initialize(auto_form=False)
    except Exception as exc:
        raise RestoreFailed(f"the hub's Zigbee network could not be restored onto the stick on "
                            f"{path}; the hub's log has the details", details=exc) from None
    _told(mismatch, app, path)


async def _startup(app: ControllerApplication) -> Mismatch | None:
    """None once zigpy started the network; what zigpy stopped at otherwise (the radio let
    go of). zigpy's exception is not kept: its text holds the network keys."""
    try:
        await app.startup(auto_form=True)
        return None
    except zigpy.exceptions.NetworkSettingsInconsistent as exc:
        stick, hub = exc.new_state, exc.old_state
    except (zigpy.exceptions.DestructiveWriteNetworkSettings,
            zigpy.exceptions.CannotWriteNetworkSettings):
        latest = app.backups.most_recent_backup()
        if latest is None:  # only a restore writes an address; cannot happen
            raise
        return Mismatch(None, latest)
    return Mismatch(stick, hub)


def same_network(stick: NetworkBackup, hub: NetworkBackup) -> bool:
    """The same network (devices joined to one are joined to the other), whatever stick."""
    a, b = stick.network_info, hub.network_info
    return bool(a.extended_pan_id == b.extended_pan_id and a.pan_id == b.pan_id
                and a.network_key.key == b.network_key.key)


def _pan(backup: NetworkBackup) -> str:
    return f"PAN 0x{int(backup.network_info.pan_id):04x}"


def foreign_words(path: str, stick: NetworkBackup, hub: NetworkBackup) -> str:
    """The hub's status for a stick of another network: which, and what to do. The PAN ids
    tell them apart; where they do not, the extended PAN ids (never a key)."""
    theirs, ours = _pan(stick), _pan(hub)
    if theirs == ours:
        a, b = stick.network_info.extended_pan_id, hub.network_info.extended_pan_id
        if a != b:
            theirs, ours = f"{theirs}, extended PAN id {a}", f"{ours}, extended PAN id {b}"
        else:
            theirs = f"{theirs} but another network key"
    return (f"the stick on {path} is on another Zigbee network ({theirs}) than the hub's "
            f"({ours}): plug the hub's stick back in, or run gatewayctl reset --full to start "
            "a new network")


def _onto_this_stick(mismatch: Mismatch) -> NetworkBackup:
    """The backup to restore: a copy (bellows writes into what it is given), this stick's
    own address, and frame counters past what either side has used."""
    backup = zigpy.backups.NetworkBackup.from_dict(mismatch.hub.as_dict())
    info = backup.network_info
    if mismatch.stick is not None:
        theirs = mismatch.stick.network_info
        info = info.replace(
            network_key=info.network_key.replace(tx_counter=max(
                info.network_key.tx_counter, theirs.network_key.tx_counter)),
            tc_link_key=info.tc_link_key.replace(tx_counter=max(
                info.tc_link_key.tx_counter, theirs.tc_link_key.tx_counter)))
    unknown = zigpy.types.EUI64.UNKNOWN  # type: ignore[attr-defined]  # set after the class
    return backup.replace(network_info=info, node_info=backup.node_info.replace(ieee=unknown))


def _told(mismatch: Mismatch, app: ControllerApplication, path: str) -> None:
    hub, now = mismatch.hub, app.state.node_info.ieee
    what = ("holds no network" if mismatch.stick is None
            else "holds a network the hub ran before the one of zigbee.db's latest backup"
            if mismatch.older
            else "holds the hub's network but was not the last stick to run it"
            if mismatch.stick.node_info.ieee != hub.node_info.ieee
            else "holds the hub's network with other settings than its latest backup")
    log.warning("zigbee: the stick on %s (address %s) %s: restored the hub's network (%s, "
                "channel %s) onto it from the backup in zigbee.db (%s), keeping the stick's "
                "own address (the backup's was %s)", path, now, what, _pan(hub),
                hub.network_info.channel, hub.backup_time.isoformat(timespec="seconds"),
                hub.node_info.ieee)
