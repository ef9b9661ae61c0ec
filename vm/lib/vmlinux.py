#!/usr/bin/env python3
"""vmlinux.py BZIMAGE OUT: write the uncompressed ELF kernel inside a bzImage.

QEMU boots an ELF vmlinux through its PVH entry point directly, which under
TCG is ~3 s faster than booting the bzImage (whose decompressor then runs
emulated). The payload is found by its magic, like the kernel's own
scripts/extract-vmlinux; xz uses the standard library, zstd the `zstd` tool.
"""

import lzma
import shutil
import subprocess
import sys

XZ = b"\xfd7zXZ\x00"
ZSTD = b"\x28\xb5\x2f\xfd"
ELF = b"\x7fELF"


def extract(data: bytes) -> bytes:
    at = data.find(XZ)
    if at >= 0:
        return lzma.LZMADecompressor().decompress(data[at:])
    at = data.find(ZSTD)
    if at >= 0:
        if not shutil.which("zstd"):
            sys.exit("vmlinux.py: the kernel is zstd-compressed: install zstd (sudo apt-get install zstd)")
        # zstd stops at the end of its frame; the bytes after it are the bzImage's trailer.
        run = subprocess.run(["zstd", "-dc"], input=data[at:], capture_output=True)
        return run.stdout
    sys.exit("vmlinux.py: no xz or zstd payload found in the kernel image")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: vmlinux.py BZIMAGE OUT")
    with open(sys.argv[1], "rb") as f:
        elf = extract(f.read())
    if not elf.startswith(ELF):
        sys.exit("vmlinux.py: the decompressed payload is not an ELF kernel")
    with open(sys.argv[2], "wb") as f:
        f.write(elf)


if __name__ == "__main__":
    main()
