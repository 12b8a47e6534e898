#!/usr/bin/env python3
"""What a CUDA build of librdmaps carries, read from the library itself:
native code (cubins) for every architecture -Dgpu_arch chose, PTX of the
newest for GPUs after it, and no dependency on the shared CUDA runtime (only
the driver is needed where it runs).

    check_gpu_build.py LIBRARY 75,80,90

The .nv_fatbin section is a sequence of fat binaries as nvcc 12 and 13 write
them: a header (magic 0xBA55ED50, version, header size, payload size), then
entries (kind 1 PTX or 2 ELF cubin, header size, payload size, the SM number
at byte 28). NVIDIA does not document this layout beyond the wrapper in
crt/fatbinary_section.h; a layout we cannot read fails this check, naming it.
"""

import struct
import subprocess
import sys
import tempfile

FATBIN_MAGIC = 0xBA55ED50


def fat_binaries(library):
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", library, out.name], check=True)
        data = open(out.name, "rb").read()
    if not data:
        sys.exit(f"check_gpu_build: {library} has no .nv_fatbin section: no GPU code was built into it")
    offset, binaries = 0, []
    while offset < len(data):
        if len(data) - offset < 16:
            break  # alignment padding at the end
        magic, _, header, size = struct.unpack_from("<IHHQ", data, offset)
        if magic != FATBIN_MAGIC:
            if not any(data[offset:offset + 16]):
                offset += 16  # padding between binaries
                continue
            sys.exit(f"check_gpu_build: unknown fat binary layout at byte {offset} of .nv_fatbin (magic {magic:#x})")
        entries, p, end = [], offset + header, offset + header + size
        while p < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, p)
            arch = struct.unpack_from("<I", data, p + 28)[0]
            if kind not in (1, 2):
                sys.exit(f"check_gpu_build: fat binary entry of kind {kind} at byte {p}: not PTX (1) or ELF (2)")
            entries.append(("ptx" if kind == 1 else "sm", arch))
            p += entry_header + payload
        binaries.append(entries)
        offset = end
    return binaries


def main():
    library, wanted = sys.argv[1], [int(a) for a in sys.argv[2].split(",")]
    failures = []
    binaries = [b for b in fat_binaries(library) if b]
    for i, entries in enumerate(binaries):
        native = sorted({arch for kind, arch in entries if kind == "sm"})
        if native != sorted(wanted):
            failures.append(f"fat binary {i} has native code for {native}, not {sorted(wanted)}")
    kernels = max(binaries, key=len)  # the object with kernels carries PTX as well
    ptx = sorted({arch for kind, arch in kernels if kind == "ptx"})
    if ptx != [max(wanted)]:
        failures.append(f"the kernels carry PTX for {ptx}, not [{max(wanted)}] (newer GPUs could not run them)")
    ldd = subprocess.run(["ldd", library], capture_output=True, text=True, check=True).stdout
    shared = [line.split()[0] for line in ldd.splitlines() if "libcudart" in line]
    if shared:
        failures.append(f"{library} needs the shared CUDA runtime {shared}; it should carry it statically")
    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print(f"ok: {len(binaries)} fat binaries, native sm_{', sm_'.join(map(str, sorted(wanted)))}, "
          f"PTX compute_{max(wanted)}, no shared libcudart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
