"""The vTPM part of the guest evidence: a quote bound to the audit, and each cloud's extras.

What each cloud keeps in its vTPM (docs/guest-evidence.md has the whole table):

- **Azure confidential VMs**: the guest OS runs above the paravisor (HCL), which asked the
  hardware for an SEV-SNP report or TDX TD report at boot and stored it, with the runtime claims
  that name the vTPM's attestation key, in NV index 0x01400001. The AK is persistent at
  0x81000003 (certificate at NV 0x01C101D0). SNP: the VCEK and its chain come from the metadata
  service (THIM); TDX: the quote for the TD report comes from the metadata service (/acc/tdquote).
- **Google Cloud**: the AK is made from the template in NV 0x01C10001 (CreatePrimary, owner
  hierarchy); Google's CA certified it in NV 0x01C10000. The vTPM is the host's, and nothing ties
  it to the SEV-SNP/TDX report that configfs-tsm returns: the verifier records it as such.
- **AWS (NitroTPM) and others**: a persistent AK at 0x81000003 if there is one, else one made
  from the default template; no CA certifies it, so its quotes are the guest's word.

Every VM: a quote over the SHA-256 PCRs 0-23 with the audit's qualifying data
(`format.quote_qualifying_data`), and the PCR values it covers. Standard library only.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from auditor.guest import metadata, tpm2

AZURE_HCL_REPORT_INDEX = 0x01400001
AZURE_AK_HANDLE = 0x81000003
AZURE_AK_CERT_INDEX = 0x01C101D0
GCE_AK_CERT_INDEX_RSA = 0x01C10000
GCE_AK_TEMPLATE_INDEX_RSA = 0x01C10001
PERSISTENT_AK_HANDLE = 0x81000003
QUOTE_BANK = "sha256"
QUOTE_PCRS = list(range(tpm2.PCR_COUNT))

#: TPMT_PUBLIC of an RSA-2048 restricted signing key (RSASSA-SHA256), the usual AK template:
#: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign; unique zeroed.
DEFAULT_AK_TEMPLATE_RSA = (
    struct.pack(">HHI", 0x0001, 0x000B, 0x00050072)
    + struct.pack(">H", 0)  # authPolicy
    + struct.pack(">HHHHI", 0x0010, 0x0014, 0x000B, 2048, 0)  # sym NULL, RSASSA-SHA256, bits, e
    + struct.pack(">H", 256)
    + bytes(256)
)

_HCL_SIGNATURE = b"HCLA"
_HCL_HW_REPORT = slice(0x20, 0x20 + 1024)  # the TD report when the HCL holds a TDX one
_HCL_REPORT_TYPE_OFFSET = 0x20 + 1184 + 8
_HCL_REPORT_TYPES = {2: "snp", 4: "tdx"}

AddError = Callable[[str, str], None]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hcl_report_type(hcl: bytes) -> str | None:
    """'snp' or 'tdx' from the HCL report's request header; None when it is not one."""
    if len(hcl) < _HCL_REPORT_TYPE_OFFSET + 4 or hcl[:4] != _HCL_SIGNATURE:
        return None
    (kind,) = struct.unpack_from("<I", hcl, _HCL_REPORT_TYPE_OFFSET)
    return _HCL_REPORT_TYPES.get(kind)


class _VtpmCollection:
    def __init__(
        self, tpm: tpm2.Tpm, provider: str, metadata_base: str, timeout: float, add: AddError
    ) -> None:
        self.tpm = tpm
        self.provider = provider
        self.metadata_base = metadata_base
        self.timeout = timeout
        self.add = add
        self.section: dict[str, Any] = {}

    def optional_nv(self, index: int, source: str) -> bytes | None:
        try:
            return self.tpm.nv_read(index)
        except tpm2.TpmError as err:
            self.add(source, str(err))
            return None

    def azure_extras(self) -> None:
        hcl = self.optional_nv(AZURE_HCL_REPORT_INDEX, "azure hcl report (NV 0x01400001)")
        if hcl is None:
            return
        self.section["hcl_report"] = _b64(hcl)
        kind = hcl_report_type(hcl)
        client = metadata.MetadataClient(self.timeout)
        if kind == "snp":
            try:
                self.section["thim"] = metadata.azure_thim_certificates(client, self.metadata_base)
            except metadata.MetadataError as err:
                self.add("azure thim certificates", str(err))
        elif kind == "tdx":
            try:
                quote = metadata.azure_td_quote(client, self.metadata_base, hcl[_HCL_HW_REPORT])
                self.section["td_quote"] = _b64(quote)
            except metadata.MetadataError as err:
                self.add("azure td quote", str(err))
        else:
            self.add("azure hcl report", "NV 0x01400001 is not an HCL report ('HCLA')")

    def attestation_key(self) -> tuple[int, bool] | None:
        """(AK handle, transient?) for this cloud, recording where the AK came from."""
        ak: dict[str, Any] = {}
        self.section["ak"] = ak
        if self.provider == "gcp":
            template = self.optional_nv(GCE_AK_TEMPLATE_INDEX_RSA, "gce ak template")
            cert = self.optional_nv(GCE_AK_CERT_INDEX_RSA, "gce ak certificate")
            if cert is not None:
                ak.update(
                    certificate=_b64(cert), certificate_index=f"0x{GCE_AK_CERT_INDEX_RSA:08x}"
                )
            if template is not None:
                return self._create(template, "gce-nv-template", ak)
        if self.provider == "azure":
            cert = self.optional_nv(AZURE_AK_CERT_INDEX, "azure ak certificate")
            if cert is not None:
                ak.update(certificate=_b64(cert), certificate_index=f"0x{AZURE_AK_CERT_INDEX:08x}")
        try:
            ak["public"] = _b64(self.tpm.read_public(PERSISTENT_AK_HANDLE))
            ak.update(handle=f"0x{PERSISTENT_AK_HANDLE:08x}", source="persistent")
            return PERSISTENT_AK_HANDLE, False
        except tpm2.TpmError as err:
            if self.provider == "azure":
                self.add("vtpm ak", f"no persistent AK: {err}")
                return None
        return self._create(DEFAULT_AK_TEMPLATE_RSA, "default-template", ak)

    def _create(self, template: bytes, source: str, ak: dict[str, Any]) -> tuple[int, bool] | None:
        try:
            handle, public = self.tpm.create_primary(tpm2.TPM_RH_OWNER, template)
        except tpm2.TpmError as err:
            self.add("vtpm ak", f"CreatePrimary from the {source} failed: {err}")
            return None
        ak.update(public=_b64(public), source=source)
        return handle, True

    def quote(self, handle: int, qualifying_data: bytes) -> None:
        """Quote, then read the PCRs; again if they moved in between (up to three times)."""
        for _ in range(3):
            before = self.tpm.pcr_read(QUOTE_BANK, QUOTE_PCRS)
            quote = self.tpm.quote(handle, qualifying_data, QUOTE_BANK, QUOTE_PCRS)
            after = self.tpm.pcr_read(QUOTE_BANK, QUOTE_PCRS)
            if before == after:
                break
        self.section["quote"] = {
            "bank": QUOTE_BANK,
            "qualifying_data": qualifying_data.hex(),
            "attest": _b64(quote.attest),
            "signature": _b64(quote.signature),
            "pcrs": {str(i): value.hex() for i, value in sorted(after.items())},
        }


def collect_vtpm(
    device: str,
    provider: str,
    metadata_base: str,
    qualifying_data: bytes,
    add: AddError,
    timeout: float = 10.0,
) -> dict[str, Any] | None:
    """The `vtpm` section, or None when no TPM answered (the reason goes to `add`)."""
    try:
        transport = tpm2.open_transport(device)
    except tpm2.TpmError as err:
        add("vtpm", str(err))
        return None
    tpm = tpm2.Tpm(transport)
    run = _VtpmCollection(tpm, provider, metadata_base, timeout, add)
    run.section["device"] = device
    try:
        if provider == "azure":
            run.azure_extras()
        found = run.attestation_key()
        if found is not None:
            handle, transient = found
            try:
                run.quote(handle, qualifying_data)
            except tpm2.TpmError as err:
                add("vtpm quote", str(err))
            finally:
                if transient:
                    try:
                        tpm.flush(handle)
                    except tpm2.TpmError as err:
                        add("vtpm flush", str(err))
    except tpm2.TpmError as err:
        add("vtpm", str(err))
    finally:
        tpm.close()
    return run.section
