"""The ``machine_id`` of batch-protocol.txt: SHA-256 of hardware identifiers.

    machine_id = SHA256(bios_serial + board_serial + board_manufacturer + board_product
                        + cpu_id + disk_serial)

Windows reads them from WMI (Win32_BIOS.SerialNumber, Win32_BaseBoard.SerialNumber /
Manufacturer / Product, Win32_Processor.ProcessorId, Win32_DiskDrive.SerialNumber), as the spec
says. Linux reads the same firmware fields from ``/sys/class/dmi/id`` (the serials are readable
by root only), builds a CPU id from ``/proc/cpuinfo`` (vendor, family, model, stepping), and
takes the first physical disk's serial from ``/sys/block``. Fallback: when none of them can be
read (a container, no root), the id is SHA-256 of ``/etc/machine-id`` (or of the host name and
MAC address), prefixed ``fallback:`` in the hash input so it never collides with a real one.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import uuid
from pathlib import Path

__all__ = ["hardware_fields", "machine_id"]

_DMI = Path("/sys/class/dmi/id")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _linux_cpu_id() -> str:
    fields = {}
    for line in _read(Path("/proc/cpuinfo")).splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("vendor_id", "cpu family", "model", "stepping") and key not in fields:
            fields[key] = value.strip()
    return "-".join(fields.get(k, "") for k in ("vendor_id", "cpu family", "model", "stepping"))


def _linux_disk_serial() -> str:
    for device in sorted(Path("/sys/block").glob("*")):
        if device.name.startswith(("loop", "ram", "zram", "dm-", "sr")):
            continue
        serial = _read(device / "device" / "serial") or _read(device / "serial")
        if serial:
            return serial
    return ""


def _wmi(cls: str, prop: str) -> str:
    command = f"(Get-CimInstance -ClassName {cls} | Select-Object -First 1).{prop}"
    try:
        out = subprocess.run(
            ["powershell", "-NoProfile", "-Command", command],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def hardware_fields() -> list[str]:
    """The six fields, in the spec's order ("" where unreadable)."""
    if platform.system() == "Windows":
        return [
            _wmi("Win32_BIOS", "SerialNumber"),
            _wmi("Win32_BaseBoard", "SerialNumber"),
            _wmi("Win32_BaseBoard", "Manufacturer"),
            _wmi("Win32_BaseBoard", "Product"),
            _wmi("Win32_Processor", "ProcessorId"),
            _wmi("Win32_DiskDrive", "SerialNumber"),
        ]
    return [
        _read(_DMI / "product_serial"),
        _read(_DMI / "board_serial"),
        _read(_DMI / "board_vendor"),
        _read(_DMI / "board_name"),
        _linux_cpu_id(),
        _linux_disk_serial(),
    ]


def machine_id() -> str:
    fields = hardware_fields()
    serials = (fields[0], fields[1], fields[5])
    if any(serials):
        return hashlib.sha256("".join(fields).encode("utf-8")).hexdigest()
    fallback = _read(Path("/etc/machine-id")) or f"{platform.node()}-{uuid.getnode():012x}"
    return hashlib.sha256(f"fallback:{fallback}".encode()).hexdigest()


if __name__ == "__main__":
    print(machine_id())
