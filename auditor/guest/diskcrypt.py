"""Is the root filesystem on guest-side dm-crypt? Read from procfs and sysfs, nothing executed.

Provider-side disk encryption decrypts outside the TEE; only encryption the guest does itself
(LUKS/dm-crypt, key released to the guest) keeps the disk-key custodian out. The root mount's
device comes from `/proc/self/mountinfo` (major:minor) or `/proc/mounts` (source path); the
device-mapper stack under it is followed through `/sys/block/<dev>/slaves/` (LVM on LUKS, LUKS on
RAID), and every dm-crypt device is named by its `/sys/block/dm-N/dm/uuid`
(`CRYPT-LUKS2-<luks uuid>-<name>` for LUKS2). Standard library only.

Each dm-crypt device also names the physical disks it sits on (`backing`): their kernel name,
serial (`/sys/block/<disk>/device/serial`: on AWS Nitro the EBS volume id) and the stable
`/dev/disk/by-id` and `/dev/disk/azure` links that point at them (Google's `google-<device
name>`, Azure's LUN links). The auditor matches these against the disks the cloud lists, so a
data disk that guest-side encryption does not cover keeps its "provider can read it" verdict.

For LUKS2 it also reads the header's tokens (`tpm_tokens`): a `systemd-tpm2` token, or a clevis
token with a `tpm2` pin, means a key slot is sealed to the (v)TPM. On a provider-implemented
vTPM that sealing is the provider's to undo, so the auditor counts the vTPM as a party that can
reach the data unless no key slot is sealed to it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from pathlib import Path
from typing import Any

MAX_DEPTH = 16
LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS2_MAX_HEADER = 4 * 1024 * 1024
MAX_LINKS = 4096
#: Folders of stable device links (udev's, and the Azure VM utilities').
LINK_DIRS = ("dev/disk/by-id", "dev/disk/azure")
# dm uuids cryptsetup gives to devices that verify or protect integrity but do not encrypt.
NOT_ENCRYPTION = ("VERITY", "INTEGRITY", "SUBDEV")


class DiskCryptError(Exception):
    """The block-device layout could not be read (the text names the file and why)."""


def _read(path: Path) -> str:
    with path.open("rb") as fh:
        return fh.read(1024 * 1024).decode("utf-8", "replace")


def _unescape(field: str) -> str:
    """Mount tables escape space, tab, newline and backslash as octal (`\\040`)."""
    out, i = [], 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def root_mount(root: Path) -> tuple[str | None, str | None]:
    """(major:minor, source) of the filesystem mounted on `/`, the last (visible) mount wins."""
    mountinfo = root / "proc" / "self" / "mountinfo"
    try:
        found: tuple[str | None, str | None] | None = None
        for line in _read(mountinfo).splitlines():
            fields = line.split()
            if "-" not in fields[6:]:
                continue
            sep = fields.index("-", 6)
            if len(fields) > sep + 2 and _unescape(fields[4]) == "/":
                found = (fields[2], _unescape(fields[sep + 2]))
        if found is not None:
            return found
    except OSError:
        pass
    mounts = root / "proc" / "mounts"
    try:
        text = _read(mounts)
    except OSError as err:
        raise DiskCryptError(f"cannot read {mountinfo} or {mounts}: {err.strerror}") from err
    source: str | None = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and _unescape(fields[1]) == "/":
            source = _unescape(fields[0])
    if source is None:
        raise DiskCryptError(f"no filesystem mounted on / in {mountinfo} or {mounts}")
    return None, source


class BlockDevices:
    """The block devices the kernel lists under `<root>/sys/block` (and their partitions)."""

    def __init__(self, root: Path) -> None:
        self.sys_block = root / "sys" / "block"
        self.sys_dev_block = root / "sys" / "dev" / "block"
        if not self.sys_block.is_dir():
            raise DiskCryptError(f"{self.sys_block} does not exist")

    def _dirs(self) -> dict[str, Path]:
        """Every device and partition name -> its sysfs directory."""
        found: dict[str, Path] = {}
        for disk in sorted(self.sys_block.iterdir()):
            found[disk.name] = disk
            try:
                for child in disk.iterdir():
                    if child.name.startswith(disk.name) and (child / "dev").is_file():
                        found[child.name] = child
            except OSError:
                continue
        return found

    def by_devnum(self, devnum: str) -> str | None:
        link = self.sys_dev_block / devnum
        if link.is_symlink():
            return os.path.basename(os.readlink(link))
        for name, path in self._dirs().items():
            try:
                if _read(path / "dev").strip() == devnum:
                    return name
            except OSError:
                continue
        return None

    def by_source(self, source: str) -> str | None:
        if source.startswith("/dev/mapper/"):
            wanted = source.removeprefix("/dev/mapper/")
            for name in self.dm_devices():
                if self.dm_attribute(name, "name") == wanted:
                    return name
            return None
        if source.startswith("/dev/"):
            name = source.removeprefix("/dev/")
            return name if name in self._dirs() else None
        return None

    def dm_devices(self) -> list[str]:
        return sorted(
            (p.name for p in self.sys_block.iterdir() if p.name.startswith("dm-")),
            key=lambda n: (len(n), n),
        )

    def dm_attribute(self, name: str, attribute: str) -> str | None:
        try:
            return _read(self.sys_block / name / "dm" / attribute).strip()
        except OSError:
            return None

    def parent_disk(self, name: str) -> str:
        """The whole disk a partition belongs to (`nvme0n1p2` -> `nvme0n1`); a disk itself."""
        if (self.sys_block / name).is_dir():
            return name
        for disk in sorted(self.sys_block.iterdir()):
            if (disk / name).is_dir():
                return disk.name
        return name

    def serial(self, disk: str) -> str | None:
        try:
            value = _read(self.sys_block / disk / "device" / "serial").strip()
        except OSError:
            return None
        return value[:128] or None

    def lower_devices(self, name: str) -> set[str]:
        """`name` and every device beneath it in the stack (through `slaves/`)."""
        seen: set[str] = set()
        frontier = [(name, 0)]
        while frontier:
            current, depth = frontier.pop()
            if current in seen or depth > MAX_DEPTH:
                continue
            seen.add(current)
            slaves = self.sys_block / current / "slaves"
            try:
                frontier.extend((s, depth + 1) for s in sorted(os.listdir(slaves)))
            except OSError:
                continue
        return seen


def device_links(root: Path) -> dict[str, list[str]]:
    """Disk name -> the stable links (`/dev/disk/by-id/...`, `/dev/disk/azure/...`) to it."""
    links: dict[str, list[str]] = {}
    count = 0
    for rel in LINK_DIRS:
        top = root / rel
        if not top.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(top):
            for name in sorted(files):
                path = Path(dirpath) / name
                if count >= MAX_LINKS or not path.is_symlink():
                    continue
                count += 1
                target = os.path.basename(os.readlink(path))
                shown = "/" + path.relative_to(root).as_posix()
                links.setdefault(target, []).append(shown)
    return {disk: sorted(names) for disk, names in links.items()}


def crypt_type(dm_uuid: str) -> str | None:
    """`LUKS2` for `CRYPT-LUKS2-...`; None when the dm device is not dm-crypt encryption."""
    parts = dm_uuid.split("-", 2)
    if len(parts) < 2 or parts[0] != "CRYPT" or not parts[1] or parts[1] in NOT_ENCRYPTION:
        return None
    return parts[1]


def disk_encryption(root: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The `disk_encryption` section and the problems met while building it.

    Raises DiskCryptError when sysfs itself cannot be read (no section at all).
    """
    devices = BlockDevices(root)
    problems: list[tuple[str, str]] = []
    root_device: str | None = None
    try:
        devnum, source = root_mount(root)
        if devnum and not devnum.startswith("0:"):
            root_device = devices.by_devnum(devnum)
        if root_device is None and source:
            root_device = devices.by_source(source)
        if root_device is None:
            problems.append(
                ("root device", f"root filesystem ({source or devnum}) maps to no block device")
            )
    except DiskCryptError as err:
        problems.append(("root device", str(err)))
    under_root = devices.lower_devices(root_device) if root_device else set()
    links = device_links(root)
    found: list[dict[str, Any]] = []
    for name in devices.dm_devices():
        uuid = devices.dm_attribute(name, "uuid")
        if uuid is None:
            problems.append((f"{devices.sys_block / name / 'dm' / 'uuid'}", "not readable"))
            continue
        kind = crypt_type(uuid)
        if kind is None:
            continue
        entry: dict[str, Any] = {
            "name": name,
            "uuid": uuid,
            "type": kind,
            "holds_root": name in under_root,
            "backing": _backing(devices, name, links),
        }
        tokens = _tpm_tokens(root, devices, name)
        if isinstance(tokens, int):
            entry["tpm_tokens"] = tokens
        else:
            problems.append((f"LUKS header of {name}", tokens))
        found.append(entry)
    section: dict[str, Any] = {"devices": found}
    if root_device is not None:
        section = {"root_device": root_device, **section}
    return section, problems


def _backing(devices: BlockDevices, name: str, links: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The physical disks under a dm device, with what identifies them to the cloud."""
    disks = sorted(
        {devices.parent_disk(d) for d in devices.lower_devices(name) if not d.startswith("dm-")}
    )
    out: list[dict[str, Any]] = []
    for disk in disks:
        entry: dict[str, Any] = {"name": disk}
        serial = devices.serial(disk)
        if serial:
            entry["serial"] = serial
        if links.get(disk):
            entry["links"] = links[disk][:32]
        out.append(entry)
    return out


def _tpm_tokens(root: Path, devices: BlockDevices, name: str) -> int | str:
    """How many key slots of the LUKS device under dm `name` are sealed to a TPM (LUKS1: 0);
    a string saying why it could not be read otherwise."""
    try:
        slaves = sorted(os.listdir(devices.sys_block / name / "slaves"))
    except OSError as err:
        return f"no underlying device listed: {err.strerror or err}"
    if len(slaves) != 1:
        return f"expected one underlying device, found {len(slaves)}"
    path = root / "dev" / slaves[0]
    try:
        return luks_tpm_tokens(path)
    except (OSError, ValueError) as err:
        return f"/dev/{slaves[0]}: {err}"


def luks_tpm_tokens(path: Path) -> int:
    """TPM-sealed tokens in the LUKS header at `path` (0 for LUKS1, which has no tokens).

    Raises ValueError when the header is not LUKS or its JSON area is unreadable.
    """
    with path.open("rb") as fh:
        head = fh.read(4096)
        if head[:6] != LUKS_MAGIC or len(head) < 16:
            raise ValueError("not a LUKS header")
        version = struct.unpack(">H", head[6:8])[0]
        if version == 1:
            return 0
        if version != 2:
            raise ValueError(f"LUKS version {version} is not known")
        size = struct.unpack(">Q", head[8:16])[0]
        if not 4096 < size <= LUKS2_MAX_HEADER:
            raise ValueError(f"LUKS2 header size {size} is out of range")
        area = fh.read(size - 4096)
    try:
        meta = json.loads(area.split(b"\0", 1)[0])
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"LUKS2 JSON area unreadable: {err}") from err
    tokens = meta.get("tokens") if isinstance(meta, dict) else None
    if not isinstance(tokens, dict):
        raise ValueError("LUKS2 JSON area has no tokens object")
    return sum(1 for token in tokens.values() if _sealed_to_tpm(token))


def _sealed_to_tpm(token: Any) -> bool:
    if not isinstance(token, dict):
        return False
    kind = str(token.get("type", ""))
    if kind == "systemd-tpm2" or kind.startswith("tpm2"):
        return True
    if kind == "clevis":  # the pin is named in the JWE's protected header
        protected = str((token.get("jwe") or {}).get("protected", ""))
        try:
            header = base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4))
        except (binascii.Error, ValueError):
            return True  # unreadable: assume it could be sealed to the TPM
        return b"tpm2" in header
    return False
