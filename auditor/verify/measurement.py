"""The launch measurement a guest should have, computed from the files the owner names.

SEV-SNP: the 48-byte MEASUREMENT a report carries. SEV and SEV-ES: the 32-byte launch digest
(GCTX.LD) the secure processor keys into the launch measurement libvirt returns
(auditor/verify/sev_launch.py checks that with the session's TIK).

A report's MEASUREMENT only means something next to an expected value. For firmware the owner
can build or download (OVMF, and for direct boot a kernel, initrd and command line), the expected
value is computed offline by replaying SNP_LAUNCH_UPDATE, which virtee's `sev-snp-measure` does;
this module wraps it with checked inputs and clear errors.
"""

from __future__ import annotations

from pathlib import Path

from sevsnpmeasure import guest, vcpu_types, vmm_types  # type: ignore[import-untyped]
from sevsnpmeasure.sev_mode import SevMode  # type: ignore[import-untyped]

VMM_TYPES = {"qemu": "QEMU", "ec2": "ec2", "gce": "gce"}
MAX_VCPUS = 512


class MeasurementError(ValueError):
    """The inputs cannot produce an expected measurement (missing file, bad OVMF, bad option)."""


def vcpu_signature(vcpu_type: str) -> int:
    """The CPUID(1).EAX signature QEMU gives a vCPU model ("EPYC-v4", "EPYC-Milan", ...)."""
    sigs: dict[str, int] = vcpu_types.CPU_SIGS
    if vcpu_type not in sigs:
        raise MeasurementError(f"unknown vCPU type {vcpu_type!r}; known: {', '.join(sigs)}")
    return sigs[vcpu_type]


def _existing(path: Path | None, what: str) -> str:
    if path is None:
        return ""
    if not path.is_file():
        raise MeasurementError(f"{what} {path} is not a readable file")
    return str(path)


def _launch_digest(
    mode: SevMode,
    ovmf: Path,
    vcpus: int,
    vcpu_type: str,
    vmm_type: str,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
    guest_features: int,
) -> str:
    """Checked inputs into sev-snp-measure's replay of the launch; its failures as ours."""
    vmm = VMM_TYPES.get(vmm_type.lower())
    if vmm is None:
        raise MeasurementError(f"unknown VMM type {vmm_type!r}; expected one of {list(VMM_TYPES)}")
    if not 1 <= vcpus <= MAX_VCPUS:
        raise MeasurementError(f"vcpus must be between 1 and {MAX_VCPUS}, not {vcpus}")
    if not 0 <= guest_features < 1 << 64:
        raise MeasurementError(f"guest_features 0x{guest_features:x} does not fit 64 bits")
    if kernel is None and (initrd is not None or append is not None):
        raise MeasurementError("initrd and append are only measured with a kernel")
    ovmf_file = _existing(ovmf, "OVMF image")
    try:
        digest: bytes = guest.calc_launch_digest(
            mode,
            vcpus,
            vcpu_signature(vcpu_type),
            ovmf_file,
            _existing(kernel, "kernel"),
            _existing(initrd, "initrd"),
            append or "",
            guest_features,
            vmm_type=vmm_types.VMMType[vmm],
        )
    except MeasurementError:
        raise
    except (OSError, ValueError, RuntimeError, AssertionError, IndexError, KeyError) as err:
        raise MeasurementError(f"sev-snp-measure could not measure {ovmf}: {err}") from err
    return digest.hex()


def expected_snp_measurement(
    ovmf: Path,
    vcpus: int,
    vcpu_type: str = "EPYC-v4",
    vmm_type: str = "qemu",
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    guest_features: int = 0x1,
) -> str:
    """Hex of the 48-byte launch digest for an SNP guest (mode `snp` of sev-snp-measure).

    `guest_features` is SEV_FEATURES (bit 0 SNPActive; Linux >= 6.6 guests usually run with
    0x21, DebugSwap on); `vmm_type` is "qemu", "ec2" or "gce", whose initial vCPU state
    differs. `initrd` and `append` only count with a `kernel` (measured direct boot).
    """
    return _launch_digest(
        SevMode.SEV_SNP, ovmf, vcpus, vcpu_type, vmm_type, kernel, initrd, append, guest_features
    )


SEV_MODES = {"sev": SevMode.SEV, "sev-es": SevMode.SEV_ES}


def expected_sev_launch_digest(
    mode: str,
    ovmf: Path,
    vcpus: int = 1,
    vcpu_type: str = "EPYC-v4",
    vmm_type: str = "qemu",
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
) -> str:
    """Hex of the 32-byte SEV or SEV-ES launch digest (modes `sev`, `seves` of sev-snp-measure).

    SEV measures the OVMF image (and, for direct boot with kernel hashes, the hashes table);
    SEV-ES adds one VMSA per vCPU, which depends on `vcpus`, `vcpu_type` and `vmm_type`.
    """
    sev_mode = SEV_MODES.get(mode.lower())
    if sev_mode is None:
        raise MeasurementError(f"unknown SEV mode {mode!r}; expected one of {list(SEV_MODES)}")
    return _launch_digest(sev_mode, ovmf, vcpus, vcpu_type, vmm_type, kernel, initrd, append, 0)


def expected_snp_ovmf_hash(ovmf: Path) -> str:
    """Hex of the OVMF-only part of the digest (`snp:ovmf-hash`), to precompute once per build."""
    try:
        digest: bytes = guest.calc_snp_ovmf_hash(_existing(ovmf, "OVMF image"))
    except MeasurementError:
        raise
    except (OSError, ValueError, RuntimeError, AssertionError, IndexError, KeyError) as err:
        raise MeasurementError(f"sev-snp-measure could not hash {ovmf}: {err}") from err
    return digest.hex()
