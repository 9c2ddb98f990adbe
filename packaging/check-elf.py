#!/usr/bin/python3
"""Check every ELF file under a tree is for the target and derive its Depends.

    check-elf.py --elf "ARM aarch64" TREE [--substvars FILE]

* Every ELF file (found by its magic number) must be described by file(1) with
  the target's machine name ("ARM aarch64", "x86-64", "ARM, EABI5"): a wheel for
  the wrong architecture fails the build instead of the hub.
* The shared libraries they need (readelf -d NEEDED, which reads any
  architecture) must be bundled in the tree or be one of the Debian libraries in
  SONAMES; the highest GLIBC_2.x symbol version they need (readelf -V) gives the
  libc6 version. The result is written as ``venv:Depends=...`` to --substvars:
  dpkg-shlibdeps cannot do this for a cross build (it needs the target's libc6
  installed), and must not strip or rewrite the wheels' auditwheel-patched objects.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

# soname -> the Debian 12 package that provides it.
SONAMES = {
    "libc.so.6": "libc6",
    "libm.so.6": "libc6",
    "libpthread.so.0": "libc6",
    "libdl.so.2": "libc6",
    "librt.so.1": "libc6",
    "libutil.so.1": "libc6",
    "ld-linux-x86-64.so.2": "libc6",
    "ld-linux-aarch64.so.1": "libc6",
    "ld-linux-armhf.so.3": "libc6",
    "libgcc_s.so.1": "libgcc-s1",
    "libstdc++.so.6": "libstdc++6",
    "libz.so.1": "zlib1g",
    "libffi.so.8": "libffi8",
    "libsystemd.so.0": "libsystemd0",
    "libssl.so.3": "libssl3",
    "libcrypto.so.3": "libssl3",
}


def elf_files(tree: Path) -> list[Path]:
    out = []
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(path)
    return out


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True,
                          text=True, env={"LC_ALL": "C"}).stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elf", required=True, help='machine as file(1) says it, e.g. "ARM aarch64"')
    p.add_argument("--substvars", type=Path)
    p.add_argument("tree", type=Path)
    args = p.parse_args()

    files = elf_files(args.tree)
    bundled = {f.name for f in files}
    wrong, unknown = [], set()
    packages: set[str] = set()
    glibc = (2, 17)
    for f in files:
        desc = subprocess.run(["file", "-b", str(f)], check=True, capture_output=True,
                              text=True).stdout
        if not re.search(rf", {re.escape(args.elf)}[ ,]", desc):
            wrong.append(f"{f}: {desc.strip()}")
            continue
        dynamic = readelf("-d", str(f))
        for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic):
            if soname in SONAMES:
                packages.add(SONAMES[soname])
            elif soname not in bundled:
                unknown.add(f"{soname} (needed by {f.name})")
        for major, minor in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", readelf("-V", str(f))):
            glibc = max(glibc, (int(major), int(minor)))
    for line in wrong:
        print(f"check-elf: wrong architecture: {line}", file=sys.stderr)
    for line in sorted(unknown):
        print(f"check-elf: unknown shared library: {line}; add it to SONAMES", file=sys.stderr)
    if wrong or unknown:
        return 1
    deps = sorted(packages - {"libc6"})
    depends = ", ".join([f"libc6 (>= {glibc[0]}.{glibc[1]})", *deps])
    print(f"check-elf: {len(files)} ELF files, all {args.elf}; venv:Depends={depends}")
    if args.substvars:
        with args.substvars.open("a", encoding="utf-8") as f:
            f.write(f"venv:Depends={depends}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
