"""The security algorithms of security.md, sans-IO: bytes in, bytes out.

DES and two-key 3DES (K1 K2 K1, ECB), SM4, key check values, keys wrapped under keys,
the POS MACs of both profiles (CUP's "ECB" MAC for ``3des``, ISO/IEC 9797-1 algorithm 1
with SM4 and padding method 2 for ``sm4``), the ANSI X9.19 retail MAC of bank links, ISO
9564 format 0 PIN blocks (8 bytes) and their 16-byte SM4 form, and the HMAC-SHA256
signature of online envelopes. Only :mod:`switch.security.software` calls these with
clear keys; nothing here logs, keeps or returns a key it was not asked for.

Every cipher is a ``cryptography`` primitive; DES is 3DES with one key three times
(``cryptography`` no longer takes an 8-byte key).
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from typing import Final, Literal

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from switch.security.errors import KeyLengthError, PinBlockFieldError, PinBlockFormatError

KeyCipher = Literal["des", "3des", "sm4"]
"""How a key enciphers: single DES (8 bytes), two-key 3DES (16), SM4 (16)."""

KEY_BYTES: Final[dict[str, int]] = {"des": 8, "3des": 16, "sm4": 16}
BLOCK_BYTES: Final[dict[str, int]] = {"des": 8, "3des": 8, "sm4": 16}
KCV_BYTES: Final = 4
PIN_LENGTHS: Final = range(4, 13)
SIGNATURE_BYTES: Final = 32


def _check_key(cipher: KeyCipher, key: bytes) -> None:
    if len(key) != KEY_BYTES[cipher]:
        raise KeyLengthError(f"a {cipher} key is {KEY_BYTES[cipher]} bytes, not {len(key)}")


def _algorithm(cipher: KeyCipher, key: bytes) -> TripleDES | algorithms.SM4:
    _check_key(cipher, key)
    if cipher == "sm4":
        return algorithms.SM4(key)
    if cipher == "des":
        return TripleDES(key * 3)
    return TripleDES(key + key[:8])


def ecb_encrypt(cipher: KeyCipher, key: bytes, data: bytes) -> bytes:
    """``data`` (whole blocks) enciphered block by block."""
    encryptor = Cipher(_algorithm(cipher, key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def ecb_decrypt(cipher: KeyCipher, key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(_algorithm(cipher, key), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def cbc_mac(cipher: KeyCipher, key: bytes, padded: bytes) -> bytes:
    """The last block of CBC encryption with a zero IV (``padded``: whole blocks)."""
    iv = bytes(BLOCK_BYTES[cipher])
    encryptor = Cipher(_algorithm(cipher, key), modes.CBC(iv)).encryptor()
    out = encryptor.update(padded) + encryptor.finalize()
    return out[-BLOCK_BYTES[cipher] :]


def kcv(cipher: KeyCipher, key: bytes) -> bytes:
    """The key check value: the first 4 bytes of the key enciphering a zero block."""
    return ecb_encrypt(cipher, key, bytes(BLOCK_BYTES[cipher]))[:KCV_BYTES]


def with_odd_parity(key: bytes) -> bytes:
    """``key`` with each byte's low bit set so that the byte has odd parity (DES keys)."""
    return bytes(b & 0xFE | (bin(b >> 1).count("1") + 1) % 2 for b in key)


def wrap_key(parent_cipher: KeyCipher, parent: bytes, key: bytes) -> bytes:
    """``key`` under ``parent``: each of its blocks enciphered alone (ECB, no variant)."""
    if len(key) % BLOCK_BYTES[parent_cipher]:
        raise KeyLengthError(f"a {len(key)}-byte key cannot go under a {parent_cipher} key")
    return ecb_encrypt(parent_cipher, parent, key)


def unwrap_key(parent_cipher: KeyCipher, parent: bytes, wrapped: bytes) -> bytes:
    if len(wrapped) % BLOCK_BYTES[parent_cipher] or not wrapped:
        raise KeyLengthError(f"{len(wrapped)} bytes are no key under a {parent_cipher} key")
    return ecb_decrypt(parent_cipher, parent, wrapped)


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError(f"XOR of {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def xor_components(components: list[bytes]) -> bytes:
    """The key the components make: their XOR."""
    key = components[0]
    for component in components[1:]:
        key = _xor(key, component)
    return key


# -- POS MACs (field 64) ---------------------------------------------------------------


def cup_mac_steps(mak: bytes, mab: bytes) -> tuple[bytes, bytes, bytes]:
    """R, E1 and E2 of the ``3des`` profile's MAC (security.md names them)."""
    padded = mab + bytes(-len(mab) % 8)
    r = bytes(8)
    for offset in range(0, len(padded), 8):
        r = _xor(r, padded[offset : offset + 8])
    h = r.hex().upper().encode("ascii")
    e1 = ecb_encrypt("des", mak, h[:8])
    e2 = ecb_encrypt("des", mak, _xor(e1, h[8:16]))
    return r, e1, e2


def pos_mac_cup(mak: bytes, mab: bytes) -> bytes:
    """The ``3des`` profile's MAC (CUP "ECB" algorithm, single-DES MAK): 8 ASCII
    upper-case hexadecimal characters."""
    e2 = cup_mac_steps(mak, mab)[2]
    return e2.hex().upper().encode("ascii")[:8]


def pos_mac_sm4(mak: bytes, mab: bytes) -> bytes:
    """The ``sm4`` profile's MAC: ISO/IEC 9797-1 MAC algorithm 1 with SM4, padding
    method 2; the first 8 bytes of the final block, binary."""
    padded = mab + b"\x80" + bytes(-(len(mab) + 1) % 16)
    return cbc_mac("sm4", mak, padded)[:8]


def pos_mac(cipher: KeyCipher, mak: bytes, mab: bytes) -> bytes:
    """Field 64 for ``mab`` under a MAK of ``cipher`` (``des`` or ``sm4``)."""
    if cipher == "des":
        return pos_mac_cup(mak, mab)
    if cipher == "sm4":
        return pos_mac_sm4(mak, mab)
    raise KeyLengthError(f"a POS MAK is des or sm4, not {cipher}")


class _CbcChain:
    """A CBC encryptor kept open across messages, each MAC'd as if under a zero IV: the
    context goes on chaining from the last block it gave, so that block is XORed into
    the next message's first block, which cancels it (E(P1 ^ C ^ C) = E(P1)). One
    encryptor for the key's life instead of one per message (about 2 µs each). Not for
    two threads at once: the switch's security module runs in its event loop."""

    __slots__ = ("_block", "_encryptor", "_last")

    def __init__(self, algorithm: TripleDES | algorithms.SM4, block: int) -> None:
        self._block = block
        self._encryptor = Cipher(algorithm, modes.CBC(bytes(block))).encryptor()
        self._last = 0

    def last_block(self, padded: bytes) -> bytes:
        """The last block of ``padded`` (whole blocks) CBC-enciphered under a zero IV."""
        block = self._block
        if self._last:
            first = (int.from_bytes(padded[:block], "big") ^ self._last).to_bytes(block, "big")
            padded = first + padded[block:]
        out = self._encryptor.update(padded)[-block:]
        self._last = int.from_bytes(out, "big")
        return out


class PosMacKey:
    """A MAK prepared for the POS MAC of its profile (``des``: CUP's; ``sm4``: ISO/IEC
    9797-1 algorithm 1): its cipher context made once and kept (ECB, or CBC through
    :class:`_CbcChain`), so a MAC costs no key schedule and no context set-up (the
    software module keeps these per key, inside)."""

    __slots__ = ("_cbc", "_ecb")

    def __init__(self, cipher: KeyCipher, mak: bytes) -> None:
        if cipher not in ("des", "sm4"):
            raise KeyLengthError(f"a POS MAK is des or sm4, not {cipher}")
        algorithm = _algorithm(cipher, mak)
        self._cbc = _CbcChain(algorithm, 16) if cipher == "sm4" else None
        self._ecb = None if cipher == "sm4" else Cipher(algorithm, modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return "PosMacKey(<hidden>)"

    def mac(self, mab: bytes) -> bytes:
        if self._cbc is not None:
            padded = mab + b"\x80" + bytes(-(len(mab) + 1) % 16)
            return self._cbc.last_block(padded)[:8]
        ecb = self._ecb
        assert ecb is not None
        padded = mab + bytes(-len(mab) % 8)
        r = 0
        for block in memoryview(padded).cast("Q"):  # 8 bytes as one native integer
            r ^= block
        h = r.to_bytes(8, sys.byteorder).hex().upper().encode("ascii")
        e1 = int.from_bytes(ecb.update(h[:8]), "big")
        e2 = ecb.update((e1 ^ int.from_bytes(h[8:16], "big")).to_bytes(8, "big"))
        return e2.hex().upper().encode("ascii")[:8]


def x919_mac(zak: bytes, mab: bytes) -> bytes:
    """ANSI X9.19 retail MAC under a double-length key (halves K_L, K_R): 8 bytes."""
    _check_key("3des", zak)
    left, right = zak[:8], zak[8:]
    padded = mab + bytes(-len(mab) % 8) if mab else bytes(8)
    o = cbc_mac("des", left, padded)
    return ecb_encrypt("des", left, ecb_decrypt("des", right, o))


class X919Key:
    """A ZAK prepared for X9.19: its cipher contexts made once and kept (the CBC one
    through :class:`_CbcChain`, the two ECB ones reused block by block), so a MAC per
    message costs no key schedule and no context set-up (the software module keeps
    these per key, inside itself)."""

    __slots__ = ("_left_cbc", "_left_ecb", "_right_ecb")

    def __init__(self, zak: bytes) -> None:
        _check_key("3des", zak)
        left = _algorithm("des", zak[:8])
        self._left_cbc = _CbcChain(left, 8)
        self._left_ecb = Cipher(left, modes.ECB()).encryptor()
        self._right_ecb = Cipher(_algorithm("des", zak[8:]), modes.ECB()).decryptor()

    def __repr__(self) -> str:
        return "X919Key(<hidden>)"

    def mac(self, mab: bytes) -> bytes:
        padded = mab + bytes(-len(mab) % 8) if mab else bytes(8)
        o = self._left_cbc.last_block(padded)
        return self._left_ecb.update(self._right_ecb.update(o))


class PinKey:
    """A PIK or ZPK prepared for PIN blocks: its ECB contexts (one each way) made once
    and kept, so a translation costs no key schedule (the software module keeps these
    per key, inside itself)."""

    __slots__ = ("_decryptor", "_encryptor", "cipher")

    def __init__(self, cipher: KeyCipher, key: bytes) -> None:
        algorithm = _algorithm(cipher, key)
        self.cipher: KeyCipher = cipher
        self._encryptor = Cipher(algorithm, modes.ECB()).encryptor()
        self._decryptor = Cipher(algorithm, modes.ECB()).decryptor()

    def __repr__(self) -> str:
        return "PinKey(<hidden>)"

    def encrypt(self, block: bytes) -> bytes:
        """``block`` (whole cipher blocks: a part would stay in the kept context)."""
        self._check(block)
        return self._encryptor.update(block)

    def decrypt(self, block: bytes) -> bytes:
        self._check(block)
        return self._decryptor.update(block)

    def _check(self, block: bytes) -> None:
        if len(block) % BLOCK_BYTES[self.cipher] or not block:
            raise PinBlockFieldError(
                f"{len(block)} bytes are no whole {self.cipher} blocks",
                field=62 if self.cipher == "sm4" else 52,
            )


def macs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a, b)


# -- PIN blocks ------------------------------------------------------------------------


def pan_field_digits(pan: str) -> str:
    """The 12 rightmost digits of ``pan`` excluding its check digit, zero-filled left."""
    if not pan.isdigit() or not pan.isascii():
        raise PinBlockFieldError("the PAN of a PIN block must be digits", field=2)
    return pan[:-1][-12:].rjust(12, "0")


def _pan_field(pan: str, nibbles: int) -> bytes:
    return bytes.fromhex(pan_field_digits(pan).rjust(nibbles, "0"))


def pin_block_bytes(cipher: KeyCipher) -> int:
    """8 for a DES or 3DES PIK, 16 for an SM4 PIK."""
    return 16 if cipher == "sm4" else 8


def clear_pin_block(pin: str, pan: str, size: int = 8) -> bytes:
    """The clear format 0 block of ``pin`` (8 bytes; 16: the SM4 form)."""
    if not pin.isascii() or not pin.isdigit() or len(pin) not in PIN_LENGTHS:
        raise PinBlockFormatError("a PIN is 4 to 12 digits")
    nibbles = size * 2
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(nibbles, "F"))
    return _xor(pin_field, _pan_field(pan, nibbles))


def pin_from_clear_block(block: bytes, pan: str) -> str:
    """The PIN of a clear format 0 block (8 or 16 bytes), after every check of
    security.md: first nibble 0, length 4-12, digits, fill all F. Else
    :class:`PinBlockFormatError` (99), which never says more than which check failed."""
    if len(block) not in (8, 16):
        raise PinBlockFieldError(f"a PIN block is 8 or 16 bytes, not {len(block)}", field=52)
    nibbles = len(block) * 2
    pin_field = _xor(block, _pan_field(pan, nibbles)).hex().upper()
    if pin_field[0] != "0":
        raise PinBlockFormatError("the PIN block is not format 0")
    length = int(pin_field[1], 16)
    if length not in PIN_LENGTHS:
        raise PinBlockFormatError("the PIN length is not 4 to 12")
    pin, fill = pin_field[2 : 2 + length], pin_field[2 + length :]
    if not pin.isdigit():
        raise PinBlockFormatError("the PIN has a non-digit")
    if fill != "F" * len(fill):
        raise PinBlockFormatError("the PIN block's fill is not all F")
    return pin


def translate_pin_block(
    from_cipher: KeyCipher, pik: bytes, to_cipher: KeyCipher, zpk: bytes, block: bytes, pan: str
) -> bytes:
    """A PIN block under ``pik`` (format 0, or the SM4 form) as a format 0 block of the
    same PIN and PAN under ``zpk``; the clear PIN stays in this call."""
    return translate_pin_block_with(PinKey(from_cipher, pik), PinKey(to_cipher, zpk), block, pan)


def translate_pin_block_with(pik: PinKey, zpk: PinKey, block: bytes, pan: str) -> bytes:
    """:func:`translate_pin_block` with keys prepared once (:class:`PinKey`)."""
    from_cipher = pik.cipher
    if len(block) != pin_block_bytes(from_cipher):
        raise PinBlockFieldError(
            f"a PIN block under a {from_cipher} PIK is {pin_block_bytes(from_cipher)} bytes, "
            f"not {len(block)}",
            field=62 if from_cipher == "sm4" else 52,
        )
    clear = pik.decrypt(block)
    pin = pin_from_clear_block(clear, pan)  # every check of security.md, before it goes on
    size = pin_block_bytes(zpk.cipher)
    # A format 0 block that passed them is the one clear_pin_block makes of its PIN and
    # PAN: under a key of the same block size it goes on as it is.
    return zpk.encrypt(clear if len(clear) == size else clear_pin_block(pin, pan, size))


# -- online envelopes ------------------------------------------------------------------


def signed_bytes(key_id: str, ts: int, nonce: str, body: bytes) -> bytes:
    """What an envelope's ``sig`` covers: key_id, LF, ts in decimal, LF, nonce, LF, body."""
    if ts < 0:
        raise ValueError("ts is 0 or more")
    return (
        b"\n".join((key_id.encode("ascii"), str(ts).encode("ascii"), nonce.encode("ascii"), b""))
        + body
    )


def online_signature(secret: bytes, key_id: str, ts: int, nonce: str, body: bytes) -> bytes:
    return hmac.new(secret, signed_bytes(key_id, ts, nonce, body), hashlib.sha256).digest()


def hmac_key_check_value(secret: bytes) -> bytes:
    """A check value for an HMAC-SHA256 key (security.md defines none): the first 4 bytes
    of HMAC-SHA256(key, 32 zero bytes)."""
    return hmac.new(secret, bytes(32), hashlib.sha256).digest()[:KCV_BYTES]


def aes_key_check_value(key: bytes) -> bytes:
    """A check value for an AES-256 key (the LMK): the first 4 bytes of AES-ECB(key, a
    zero block)."""
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:KCV_BYTES]
