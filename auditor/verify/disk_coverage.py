"""Which of a VM's cloud disks does guest-side encryption cover? One matcher for every cloud.

A guest evidence file names, for each dm-crypt device, the physical disks beneath it: their
kernel name, serial and stable `/dev/disk/...` links (auditor/guest/diskcrypt.py). The cloud
lists the disks it attached. A cloud disk is *covered* only when a dm-crypt device sits on the
guest disk that identifies as it:

- AWS (Nitro NVMe): the NVMe serial is the EBS volume id without its dash (`vol0abc...`), also
  in the `nvme-Amazon_Elastic_Block_Store_vol0abc...` link;
- Google Cloud: udev's `google-<device name>` (or `scsi-0Google_PersistentDisk_<device name>`)
  link, or a serial equal to the device name;
- Azure: the OS disk is `/dev/disk/azure/root` (or `.../os`), a data disk is
  `/dev/disk/azure/scsi1/lun<N>` (or `.../data/by-lun/<N>`), N being the LUN Azure lists;
- libvirt (KVM): the `<serial>` the domain XML gives a disk, which the guest sees as the disk's
  serial and in `virtio-<serial>` (virtio-blk) or `scsi-0QEMU_QEMU_HARDDISK_<serial>` links. A
  disk without a `<serial>` cannot be identified, so it is never covered.

A disk nothing identifies is not covered: it keeps every veto that provider-side encryption
gets, so one plaintext data disk cannot ride on an encrypted root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_AZURE_OS = re.compile(r"^/dev/disk/azure/(root|os)$")
_AZURE_LUN = re.compile(r"^/dev/disk/azure/(?:scsi1/lun|data/by-lun/)(\d+)$")
_QEMU_LINKS = ("virtio-", "scsi-0QEMU_QEMU_HARDDISK_")


def _guest_keys(provider: str, backing: Mapping[str, Any]) -> set[str]:
    """What a guest disk identifies as, in the form `_cloud_key` gives cloud disks."""
    keys: set[str] = set()
    serial = str(backing.get("serial") or "").strip()
    links = [str(link) for link in backing.get("links") or [] if isinstance(link, str)]
    names = [link.rsplit("/", 1)[-1] for link in links]
    if provider == "aws":
        for value in [serial, *names]:
            match = re.search(r"(?:^|_)vol-?([0-9a-f]{8,17})$", value.lower())
            if match:
                keys.add(f"aws:vol-{match.group(1)}")
    elif provider == "gcp":
        if serial:
            keys.add(f"gcp:{serial}")
        for name in names:
            for prefix in ("google-", "scsi-0Google_PersistentDisk_"):
                if name.startswith(prefix) and "-part" not in name[len(prefix) :]:
                    keys.add(f"gcp:{name[len(prefix) :]}")
    elif provider == "azure":
        for link in links:
            if _AZURE_OS.match(link):
                keys.add("azure:os")
            lun = _AZURE_LUN.match(link)
            if lun:
                keys.add(f"azure:lun{int(lun.group(1))}")
    elif provider == "libvirt":
        if serial:
            keys.add(f"libvirt:{serial}")
        for name in names:
            for prefix in _QEMU_LINKS:
                if name.startswith(prefix) and "-part" not in name[len(prefix) :]:
                    keys.add(f"libvirt:{name[len(prefix) :]}")
    return keys


def _cloud_key(provider: str, disk: Mapping[str, Any]) -> str | None:
    if provider == "aws":
        disk_id = str(disk.get("id") or "").lower()
        return f"aws:{disk_id}" if disk_id.startswith("vol-") else None
    if provider == "gcp":
        device = disk.get("device")
        return f"gcp:{device}" if isinstance(device, str) and device else None
    if provider == "azure":
        if disk.get("boot") is True:
            return "azure:os"
        lun = disk.get("lun")
        return f"azure:lun{lun}" if isinstance(lun, int) and not isinstance(lun, bool) else None
    if provider == "libvirt":
        serial = disk.get("serial")
        return f"libvirt:{serial}" if isinstance(serial, str) and serial else None
    return None


def covered_disks(
    provider: str, disks: Sequence[Mapping[str, Any]], devices: Iterable[Mapping[str, Any]]
) -> dict[int, str]:
    """Index of each cloud disk that a guest dm-crypt device covers -> that device's name."""
    by_key: dict[str, str] = {}
    for device in devices:
        for backing in device.get("backing") or []:
            if isinstance(backing, Mapping):
                for key in _guest_keys(provider, backing):
                    by_key.setdefault(key, str(device.get("name", "")))
    out: dict[int, str] = {}
    for index, disk in enumerate(disks):
        wanted = _cloud_key(provider, disk)
        if wanted is not None and wanted in by_key:
            out[index] = by_key[wanted]
    return out
