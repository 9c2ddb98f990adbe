#!/usr/bin/python3
"""Install wheels into a virtualenv staged under DESTDIR, for a target machine.

Used by packaging/build-venv.sh. The wheels may be for another architecture than
the build machine's (aarch64 wheels on amd64): pypa/installer (the wheel installer
Debian's own pybuild uses) unpacks a wheel into a scheme without running or
checking anything of the target, and writes console scripts whose shebang is the
venv's interpreter *as seen on the target* (e.g. /usr/lib/gatewayd/bin/python3).

Afterwards it checks that the installed set is closed: every Requires-Dist of
every installed distribution, with environment markers evaluated for the target
(Linux, CPython 3.11, the target's machine), is installed in a matching version.

    install-wheels.py --prefix /usr/lib/gatewayd --destdir debian/gatewayd \
        --machine aarch64 --requirements packaging/requirements.txt \
        --wheeldir WHEELS [--manifest FILE] [EXTRA_WHEEL...]

The wheels named by the requirements file (name==version lines) are taken from
--wheeldir, which must hold exactly one wheel per pin that suits the target.
"""

from __future__ import annotations

import argparse
import sys
from email.parser import Parser
from pathlib import Path

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def scheme(prefix: str, pyver: str) -> dict[str, str]:
    site = f"{prefix}/lib/python{pyver}/site-packages"
    return {
        "purelib": site,
        "platlib": site,
        "headers": f"{prefix}/include/site/python{pyver}",
        "scripts": f"{prefix}/bin",
        "data": prefix,
    }


def target_environment(machine: str, pyver: str) -> dict[str, str]:
    env = default_environment()
    env.update(
        os_name="posix",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine=machine,
        platform_python_implementation="CPython",
        implementation_name="cpython",
        python_version=pyver,
        python_full_version=f"{pyver}.0",
        implementation_version=f"{pyver}.0",
    )
    return env


def pinned(requirements: Path) -> list[tuple[str, str]]:
    """The name==version pins of a requirements file (hash options ignored)."""
    pins = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "--")):
            continue
        name, _, rest = line.partition("==")
        pins.append((canonicalize_name(name), rest.split()[0].rstrip("\\")))
    return pins


def select_wheels(pins: list[tuple[str, str]], wheeldir: Path, machine: str) -> list[Path]:
    """Pick, for every pin, the one wheel in *wheeldir* that suits the target."""
    chosen, missing = [], []
    by_pin: dict[tuple[str, str], list[Path]] = {}
    for whl in wheeldir.glob("*.whl"):
        name, version, _build, tags = parse_wheel_filename(whl.name)
        if any(t.platform == "any" or t.platform.endswith("_" + machine) for t in tags):
            by_pin.setdefault((name, str(version)), []).append(whl)
    for pin in pins:
        found = by_pin.get(pin, [])
        if len(found) != 1:
            missing.append(f"{pin[0]}=={pin[1]}: {len(found)} wheels for {machine}")
        else:
            chosen.append(found[0])
    if missing:
        raise SystemExit("install-wheels: " + "; ".join(missing))
    return chosen


def manifest(site: Path) -> str:
    """A list of the bundled distributions: name, version, licence, home page."""
    rows = []
    for dist_info in sorted(site.glob("*.dist-info")):
        meta = Parser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
        licence = meta.get("License-Expression") or meta.get("License") or ""
        if not licence or len(licence) > 60:
            classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                           if c.startswith("License ::")]
            licence = ", ".join(classifiers) or "see the licence files"
        home = meta.get("Home-page") or ""
        for url in meta.get_all("Project-URL") or []:
            home = home or url.split(",", 1)[-1].strip()
        rows.append(f"{meta['Name']} {meta['Version']}\n  licence: {licence}\n"
                    f"  source: {home}\n  files: {dist_info.name}/")
    return "\n".join(rows) + "\n"


def check_closure(site: Path, env: dict[str, str], provided: set[str]) -> list[str]:
    """Return the unmet requirements of the distributions installed in *site*."""
    installed: dict[str, str] = {canonicalize_name(p): "external" for p in provided}
    metas = []
    for dist_info in site.glob("*.dist-info"):
        meta = Parser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
        installed[canonicalize_name(meta["Name"])] = meta["Version"]
        metas.append(meta)
    problems = []
    for meta in metas:
        for raw in meta.get_all("Requires-Dist") or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            have = installed.get(canonicalize_name(req.name))
            if have is None:
                problems.append(f"{meta['Name']} needs {req}: not installed")
            elif have != "external" and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{meta['Name']} needs {req}: {have} installed")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefix", required=True, help="the venv's path on the target")
    p.add_argument("--destdir", required=True, help="staging root (debian/<package>)")
    p.add_argument("--machine", required=True, help="target uname -m, e.g. aarch64")
    p.add_argument("--pyver", default="3.11")
    p.add_argument("--provided", action="append", default=[],
                   help="a distribution provided outside the venv (e.g. systemd-python)")
    p.add_argument("--requirements", type=Path, required=True)
    p.add_argument("--wheeldir", type=Path, required=True)
    p.add_argument("--manifest", type=Path, help="write the list of bundled packages here")
    p.add_argument("wheels", nargs="*", type=Path, help="more wheels (the application's own)")
    args = p.parse_args()

    wheels = select_wheels(pinned(args.requirements), args.wheeldir, args.machine) + args.wheels
    sch = scheme(args.prefix, args.pyver)
    for wheel in wheels:
        dest = SchemeDictionaryDestination(
            sch,
            interpreter=f"{args.prefix}/bin/python3",
            script_kind="posix",
            bytecode_optimization_levels=(),  # compiled on the target, in postinst
            destdir=args.destdir,
        )
        with WheelFile.open(wheel) as source:
            install(source, dest, additional_metadata={"INSTALLER": b"gatewayd-build-venv\n"})

    site = Path(args.destdir + sch["purelib"])
    if args.manifest:
        args.manifest.parent.mkdir(parents=True, exist_ok=True)
        args.manifest.write_text(manifest(site), encoding="utf-8")
    problems = check_closure(site, target_environment(args.machine, args.pyver),
                             set(args.provided))
    for line in problems:
        print(f"install-wheels: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
