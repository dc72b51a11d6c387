"""A minimal TPM 2.0 client for the guest collector: the few commands attestation needs.

TPM 2.0 is a byte protocol (TPM 2.0 Library Part 3, Commands; Part 2, Structures; every
integer big-endian), so the collector marshals it by hand instead of depending on tpm2-tss:
`NV_ReadPublic`/`NV_Read` (the Azure HCL report and AK certificate, GCE's AK template and
certificate), `ReadPublic` (a persistent AK), `CreatePrimary` (an AK from a template when the
cloud keeps none persistent), `PCR_Read`, `Quote` (the audit's binding as qualifying data) and
`FlushContext`. Authorisation is the empty password session (TPM_RS_PW), which is what these
objects use on every cloud. Failures are `TpmError`s whose text decodes the response code to
words, so the evidence file says *why* the vTPM did not answer.

Transports: the kernel's resource manager (`/dev/tpmrm0`, the default) or a TPM simulator's
command socket (`tcp:HOST:PORT` or `unix:PATH`, raw commands as swtpm serves them), which is how
the tests run the collector against a real TPM 2.0 implementation.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Protocol

TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002

TPM_CC_NV_READ = 0x0000014E
TPM_CC_CREATE_PRIMARY = 0x00000131
TPM_CC_QUOTE = 0x00000158
TPM_CC_FLUSH_CONTEXT = 0x00000165
TPM_CC_NV_READ_PUBLIC = 0x00000169
TPM_CC_READ_PUBLIC = 0x00000173
TPM_CC_GET_CAPABILITY = 0x0000017A
TPM_CC_PCR_READ = 0x0000017E

TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
TPM_RH_ENDORSEMENT = 0x4000000B
TPM_ALG_NULL = 0x0010
TPMA_NV_OWNERREAD = 1 << 17
TPMA_NV_AUTHREAD = 1 << 18
TPM_CAP_TPM_PROPERTIES = 0x00000006
TPM_PT_NV_BUFFER_MAX = 0x0000012C

BANKS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

MAX_RESPONSE = 64 * 1024
RETRIES = 5
#: TPM_RC_YIELDED, TPM_RC_TESTING, TPM_RC_RETRY: the command did not start; send it again.
_TRY_AGAIN = {0x908, 0x90A, 0x922}
DEFAULT_NV_CHUNK = 512
PCR_COUNT = 24

#: Format-one response codes (TPM_RC_FMT1 + n): the parameter, handle or session is wrong.
_FMT1 = {
    0x01: ("ASYMMETRIC", "asymmetric algorithm not supported or not correct"),
    0x02: ("ATTRIBUTES", "inconsistent attributes"),
    0x03: ("HASH", "hash algorithm not supported or not appropriate"),
    0x04: ("VALUE", "value is out of range or not correct for the context"),
    0x05: ("HIERARCHY", "hierarchy is not enabled or not correct for the use"),
    0x07: ("KEY_SIZE", "key size is not supported"),
    0x08: ("MGF", "mask generation function not supported"),
    0x09: ("MODE", "mode of operation not supported"),
    0x0A: ("TYPE", "the type of the value is not appropriate for the use"),
    0x0B: ("HANDLE", "the handle is not correct for the use (nothing there?)"),
    0x0C: ("KDF", "unsupported key derivation function"),
    0x0D: ("RANGE", "value was out of allowed range"),
    0x0E: ("AUTH_FAIL", "the authorisation HMAC check failed (wrong password)"),
    0x0F: ("NONCE", "invalid nonce size or nonce value mismatch"),
    0x10: ("PP", "authorisation requires assertion of physical presence"),
    0x12: ("SCHEME", "unsupported or incompatible scheme"),
    0x15: ("SIZE", "structure is the wrong size"),
    0x16: ("SYMMETRIC", "unsupported symmetric algorithm or key size"),
    0x17: ("TAG", "incorrect structure tag"),
    0x18: ("SELECTOR", "union selector is incorrect"),
    0x1A: ("INSUFFICIENT", "the TPM was unable to unmarshal a value (too few octets)"),
    0x1B: ("SIGNATURE", "the signature is not valid"),
    0x1C: ("KEY", "key fields are not compatible with the selected use"),
    0x1D: ("POLICY_FAIL", "a policy check failed"),
    0x1F: ("INTEGRITY", "integrity check failed"),
    0x20: ("TICKET", "invalid ticket"),
    0x21: ("RESERVED_BITS", "reserved bits not set to zero as required"),
    0x22: ("BAD_AUTH", "authorisation failure without DA implications"),
    0x23: ("EXPIRED", "the policy has expired"),
    0x24: ("POLICY_CC", "the command code in the policy is not the command code of the command"),
    0x25: ("BINDING", "public and sensitive portions of an object are not cryptographically bound"),
    0x26: ("CURVE", "curve not supported"),
    0x27: ("ECC_POINT", "point is not on the required curve"),
}
#: Format-zero errors (TPM_RC_VER1 + n): the command as a whole failed.
_VER1 = {
    0x000: ("INITIALIZE", "the TPM is not initialised (no TPM2_Startup)"),
    0x001: ("FAILURE", "the TPM is in failure mode"),
    0x003: ("SEQUENCE", "improper use of a sequence handle"),
    0x00B: ("PRIVATE", "not currently used"),
    0x019: ("HMAC", "not currently used"),
    0x020: ("DISABLED", "the command is disabled"),
    0x021: ("EXCLUSIVE", "the command failed because audit sequence required exclusivity"),
    0x024: ("AUTH_TYPE", "authorisation handle is not correct for the command"),
    0x025: ("AUTH_MISSING", "the command requires an authorisation session"),
    0x026: ("POLICY", "policy failure in math operation or an invalid authPolicy value"),
    0x027: ("PCR", "PCR check fail"),
    0x028: ("PCR_CHANGED", "PCR have changed since checked"),
    0x02D: ("UPGRADE", "the TPM is in field upgrade mode"),
    0x02E: ("TOO_MANY_CONTEXTS", "context ID counter is at maximum"),
    0x02F: ("AUTH_UNAVAILABLE", "authValue or authPolicy is not available for the entity"),
    0x030: ("REBOOT", "a _TPM_Init and Startup(CLEAR) is required"),
    0x031: ("UNBALANCED", "the protection algorithms are not reasonably balanced"),
    0x042: ("COMMAND_SIZE", "command size is inconsistent with the data"),
    0x043: ("COMMAND_CODE", "command code not supported"),
    0x044: ("AUTHSIZE", "authorizationSize is out of range"),
    0x045: ("AUTH_CONTEXT", "use of an authorisation session with a command that allows none"),
    0x046: ("NV_RANGE", "NV offset and size is out of range"),
    0x047: ("NV_SIZE", "requested allocation size is larger than allowed"),
    0x048: ("NV_LOCKED", "the NV index is locked"),
    0x049: ("NV_AUTHORIZATION", "not authorised to read or write this NV index"),
    0x04A: ("NV_UNINITIALIZED", "the NV index has never been written"),
    0x04B: ("NV_SPACE", "insufficient NV space"),
    0x04C: ("NV_DEFINED", "the NV index is already defined"),
    0x050: ("BAD_CONTEXT", "context in TPM2_ContextLoad is not valid"),
    0x051: ("CPHASH", "cpHash value already set or not correct for use"),
    0x052: ("PARENT", "handle for parent is not a valid parent"),
    0x053: ("NEEDS_TEST", "some function needs testing"),
    0x054: ("NO_RESULT", "an internal function cannot process a request"),
    0x055: ("SENSITIVE", "the sensitive area did not unmarshal correctly"),
}
#: Warnings (TPM_RC_WARN + n): try again later, or resources ran out.
_WARN = {
    0x001: ("CONTEXT_GAP", "gap for context ID is too large"),
    0x002: ("OBJECT_MEMORY", "out of memory for object contexts"),
    0x003: ("SESSION_MEMORY", "out of memory for session contexts"),
    0x004: ("MEMORY", "out of shared object/session memory"),
    0x005: ("SESSION_HANDLES", "out of session handles"),
    0x006: ("OBJECT_HANDLES", "out of object handles"),
    0x007: ("LOCALITY", "bad locality"),
    0x008: ("YIELDED", "the TPM has suspended operation on the command"),
    0x009: ("CANCELED", "the command was cancelled"),
    0x00A: ("TESTING", "the TPM is performing self-tests"),
    0x020: ("NV_RATE", "the TPM is rate-limiting accesses to prevent wearout of NV"),
    0x021: ("LOCKOUT", "authorisations for objects subject to DA protection are not allowed"),
    0x022: ("RETRY", "the TPM was not able to start the command"),
    0x023: ("NV_UNAVAILABLE", "the command may require writing of NV and NV is not accessible"),
}


def describe_rc(rc: int) -> str:
    """A response code in words: `TPM_RC_HANDLE (handle 1): the handle is not correct ...`."""
    layer = rc >> 16
    if layer:
        owner = {0x0B: "the kernel's resource manager", 0x0A: "the TSS resource manager"}
        return f"0x{rc:08x}: error 0x{rc & 0xFFFF:04x} from {owner.get(layer, f'layer {layer}')}"
    if rc & 0x080:  # format one
        number = rc & 0x3F
        name, words = _FMT1.get(number, (f"0x{number:02x}", "unknown format-one error"))
        n = (rc >> 8) & 0xF
        if rc & 0x040:
            where = f"parameter {n}"
        elif n & 0x8:
            where = f"session {n & 0x7}"
        else:
            where = f"handle {n}" if n else ""
        place = f" ({where})" if where else ""
        return f"TPM_RC_{name}{place}: {words} [0x{rc:03x}]"
    if rc & 0x900 == 0x900:
        name, words = _WARN.get(rc & 0x7F, (f"0x{rc & 0x7F:02x}", "unknown warning"))
        return f"TPM_RC_{name}: {words} [0x{rc:03x}]"
    if rc & 0x100:
        name, words = _VER1.get(rc & 0x7F, (f"0x{rc & 0x7F:02x}", "unknown error"))
        return f"TPM_RC_{name}: {words} [0x{rc:03x}]"
    return f"TPM 1.2 style response code 0x{rc:08x}"


class TpmError(Exception):
    """The TPM (or the way to it) failed; `rc` is the response code when the TPM answered."""

    def __init__(self, message: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc


class Transport(Protocol):
    def transmit(self, command: bytes) -> bytes: ...

    def close(self) -> None: ...


class DeviceTransport:
    """A TPM character device (the resource manager /dev/tpmrm0): one write, one read."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR)
        except OSError as err:
            why = "not present" if isinstance(err, FileNotFoundError) else err.strerror
            raise TpmError(f"{path}: {why}") from err
        self.path = path

    def transmit(self, command: bytes) -> bytes:
        try:
            os.write(self._fd, command)
            return os.read(self._fd, MAX_RESPONSE)
        except OSError as err:
            raise TpmError(f"{self.path}: {err.strerror or err}") from err

    def close(self) -> None:
        os.close(self._fd)


class SocketTransport:
    """A simulator's command socket, raw TPM commands (swtpm `--server type=tcp|unixio`)."""

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        kind, _, rest = address.partition(":")
        try:
            if kind == "unix":
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(rest)
            elif kind == "tcp":
                host, _, port = rest.rpartition(":")
                self._sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout)
            else:
                raise TpmError(f"{address}: expected tcp:HOST:PORT or unix:PATH")
        except (OSError, ValueError) as err:
            raise TpmError(f"TPM simulator at {address}: {err}") from err

    def _recv(self, size: int) -> bytes:
        chunks: list[bytes] = []
        while size:
            chunk = self._sock.recv(size)
            if not chunk:
                raise TpmError(f"TPM simulator at {self.address} closed the connection")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def transmit(self, command: bytes) -> bytes:
        try:
            self._sock.sendall(command)
            header = self._recv(10)
            (size,) = struct.unpack_from(">I", header, 2)
            if size < 10 or size > MAX_RESPONSE:
                raise TpmError(f"TPM simulator at {self.address}: response size {size}")
            return header + self._recv(size - 10)
        except OSError as err:
            raise TpmError(f"TPM simulator at {self.address}: {err}") from err

    def close(self) -> None:
        self._sock.close()


def open_transport(where: str) -> Transport:
    """`/dev/tpmrm0` (any path), `tcp:HOST:PORT` or `unix:PATH`."""
    if where.startswith(("tcp:", "unix:")):
        return SocketTransport(where)
    return DeviceTransport(where)


# -- marshalling --------------------------------------------------------------------------------


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _tpm2b(data: bytes) -> bytes:
    return _u16(len(data)) + data


#: The empty-password authorisation area: TPM_RS_PW, no nonce, no attributes, empty HMAC.
_PASSWORD_AUTH = _u32(9) + _u32(TPM_RS_PW) + _tpm2b(b"") + b"\x00" + _tpm2b(b"")


def pcr_selection(bank: str, indexes: list[int]) -> bytes:
    """TPML_PCR_SELECTION with one bank: count, hash, sizeofSelect 3, the bitmap."""
    bitmap = bytearray(3)
    for i in indexes:
        bitmap[i // 8] |= 1 << (i % 8)
    return _u32(1) + _u16(BANKS[bank]) + b"\x03" + bytes(bitmap)


class _Response:
    """Bounds-checked reads of a response body; running off the end is a TpmError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise TpmError(f"{self.what}: response truncated at byte {self.pos}")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def tpm2b(self) -> bytes:
        return self.take(self.u16())


@dataclass(frozen=True)
class NvPublic:
    index: int
    name_alg: int
    attributes: int
    size: int


@dataclass(frozen=True)
class Quote:
    attest: bytes  # TPMS_ATTEST as signed
    signature: bytes  # TPMT_SIGNATURE


class Tpm:
    """The commands the collector sends; every method raises TpmError with the reason."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.close()

    def _command(
        self,
        code: int,
        what: str,
        handles: bytes = b"",
        params: bytes = b"",
        *,
        auth: bool = False,
        response_handles: int = 0,
    ) -> tuple[bytes, bytes]:
        """Send one command; (response handles, response parameters) or TpmError."""
        tag = TPM_ST_SESSIONS if auth else TPM_ST_NO_SESSIONS
        body = handles + (_PASSWORD_AUTH if auth else b"") + params
        command = _u16(tag) + _u32(10 + len(body)) + _u32(code) + body
        for attempt in range(RETRIES + 1):
            response = self.transport.transmit(command)
            if len(response) < 10:
                raise TpmError(f"{what}: response of {len(response)} bytes")
            _tag, size, rc = struct.unpack_from(">HII", response, 0)
            if rc not in _TRY_AGAIN or attempt == RETRIES:
                break
            time.sleep(0.05 * 2**attempt)  # the TPM asks to be asked again
        if rc != 0:
            raise TpmError(f"{what}: {describe_rc(rc)}", rc)
        if size != len(response):
            raise TpmError(f"{what}: response says {size} bytes, {len(response)} came")
        rest = response[10:]
        handle_bytes, rest = rest[: 4 * response_handles], rest[4 * response_handles :]
        if auth:  # parameterSize, parameters, then the session's response area
            if len(rest) < 4:
                raise TpmError(f"{what}: response truncated")
            (param_size,) = struct.unpack_from(">I", rest, 0)
            if 4 + param_size > len(rest):
                raise TpmError(f"{what}: parameter size {param_size} runs past the response")
            rest = rest[4 : 4 + param_size]
        return handle_bytes, rest

    def nv_buffer_max(self) -> int:
        """TPM_PT_NV_BUFFER_MAX: the most one NV_Read returns (a safe default if unknown)."""
        params = _u32(TPM_CAP_TPM_PROPERTIES) + _u32(TPM_PT_NV_BUFFER_MAX) + _u32(1)
        try:
            _, body = self._command(TPM_CC_GET_CAPABILITY, "GetCapability", params=params)
            r = _Response(body, "GetCapability")
            r.u8()  # moreData
            if r.u32() != TPM_CAP_TPM_PROPERTIES or r.u32() < 1:
                return DEFAULT_NV_CHUNK
            prop, value = r.u32(), r.u32()
        except TpmError:
            return DEFAULT_NV_CHUNK
        return value if prop == TPM_PT_NV_BUFFER_MAX and 0 < value <= 4096 else DEFAULT_NV_CHUNK

    def nv_read_public(self, index: int) -> NvPublic:
        what = f"NV_ReadPublic 0x{index:08x}"
        _, body = self._command(TPM_CC_NV_READ_PUBLIC, what, handles=_u32(index))
        r = _Response(body, what)
        public = _Response(r.tpm2b(), what)
        nv_index = public.u32()
        name_alg = public.u16()
        attributes = public.u32()
        public.tpm2b()  # authPolicy
        return NvPublic(nv_index, name_alg, attributes, public.u16())

    def nv_read(self, index: int, limit: int = 64 * 1024) -> bytes:
        """The whole NV index, read in chunks with the index's own (empty) password, or the
        owner's where the index allows only owner reads (TPMA_NV_OWNERREAD without AUTHREAD)."""
        public = self.nv_read_public(index)
        if public.size > limit:
            raise TpmError(f"NV index 0x{index:08x}: {public.size} bytes, more than {limit}")
        auth = index
        if not public.attributes & TPMA_NV_AUTHREAD and public.attributes & TPMA_NV_OWNERREAD:
            auth = TPM_RH_OWNER
        return self._nv_read(auth, index, public.size)

    def _nv_read(self, auth: int, index: int, size: int) -> bytes:
        chunk = self.nv_buffer_max()
        out = bytearray()
        while len(out) < size:
            want = min(chunk, size - len(out))
            what = f"NV_Read 0x{index:08x} at {len(out)}"
            _, body = self._command(
                TPM_CC_NV_READ,
                what,
                handles=_u32(auth) + _u32(index),
                params=_u16(want) + _u16(len(out)),
                auth=True,
            )
            data = _Response(body, what).tpm2b()
            if not data:
                raise TpmError(f"{what}: the TPM returned no data")
            out += data
        return bytes(out[:size])

    def read_public(self, handle: int) -> bytes:
        """The object's TPMT_PUBLIC (the contents of its TPM2B_PUBLIC)."""
        what = f"ReadPublic 0x{handle:08x}"
        _, body = self._command(TPM_CC_READ_PUBLIC, what, handles=_u32(handle))
        return _Response(body, what).tpm2b()

    def create_primary(self, hierarchy: int, template: bytes) -> tuple[int, bytes]:
        """A primary key from a TPMT_PUBLIC template: (transient handle, its TPMT_PUBLIC)."""
        params = (
            _tpm2b(_tpm2b(b"") + _tpm2b(b""))  # TPM2B_SENSITIVE_CREATE: no auth, no data
            + _tpm2b(template)
            + _tpm2b(b"")  # outsideInfo
            + _u32(0)  # creationPCR: none
        )
        handles, body = self._command(
            TPM_CC_CREATE_PRIMARY,
            f"CreatePrimary under 0x{hierarchy:08x}",
            handles=_u32(hierarchy),
            params=params,
            auth=True,
            response_handles=1,
        )
        (handle,) = struct.unpack(">I", handles)
        return handle, _Response(body, "CreatePrimary").tpm2b()

    def flush(self, handle: int) -> None:
        self._command(TPM_CC_FLUSH_CONTEXT, f"FlushContext 0x{handle:08x}", params=_u32(handle))

    def pcr_read(self, bank: str, indexes: list[int]) -> dict[int, bytes]:
        """PCR values of one bank; the TPM returns at most 8 per call, so ask until done."""
        values: dict[int, bytes] = {}
        wanted = sorted(indexes)
        while True:
            left = [i for i in wanted if i not in values]
            if not left:
                return values
            what = f"PCR_Read {bank}"
            _, body = self._command(TPM_CC_PCR_READ, what, params=pcr_selection(bank, left))
            r = _Response(body, what)
            r.u32()  # pcrUpdateCounter
            got: list[int] = []
            for _ in range(r.u32()):
                r.u16()
                bitmap = r.take(r.u8())
                got += [i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1]
            digests = [r.tpm2b() for _ in range(r.u32())]
            if not digests or len(digests) != len(got):
                raise TpmError(f"{what}: PCRs {left} not allocated in this bank")
            values.update(zip(got, digests, strict=True))

    def quote(self, handle: int, qualifying_data: bytes, bank: str, indexes: list[int]) -> Quote:
        """TPM2_Quote by the key at `handle` over `indexes` of `bank`, its own signing scheme."""
        what = f"Quote by 0x{handle:08x}"
        params = _tpm2b(qualifying_data) + _u16(TPM_ALG_NULL) + pcr_selection(bank, indexes)
        _, body = self._command(TPM_CC_QUOTE, what, handles=_u32(handle), params=params, auth=True)
        r = _Response(body, what)
        attest = r.tpm2b()
        return Quote(attest=attest, signature=body[r.pos :])
