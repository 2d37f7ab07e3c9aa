"""The security module's errors, each carrying the response code it is answered with
(security.md). None of their texts holds a key, a component, a secret or a PIN block:
they say which check failed, and name a key by its kind, owner or KCV only."""

from __future__ import annotations

from switch.errors import RemoteProtocolError, StartupError, SwitchError


class SecurityError(SwitchError):
    """Base of the security module's errors; unmapped ones answer 96."""

    response_code = "96"


class KeyLengthError(SecurityError):
    """A key of the wrong length for its cipher, or a wrapped key of no whole blocks:
    our own misuse (or a corrupt record), answered 96."""


class KeyUsageError(SecurityError):
    """A key asked for what its kind is not for (a PIK as a MAK, a TMK as a ZMK): our
    own misuse, answered 96."""


class LayoutNotAllowedError(SecurityError):
    """A sign-on's 60.3 that the terminal's entry does not allow (001 without the
    permission, 003 from a terminal that requires 005, a layout of the other cipher,
    an unknown one): 40, and no field 62."""

    response_code = "40"


class PinBlockFieldError(RemoteProtocolError):
    """The PIN block field is the wrong size for the key set: 30 naming the field."""

    def __init__(self, message: str, *, field: int) -> None:
        super().__init__(message)
        self.field = field


class PinBlockFormatError(SecurityError):
    """The PIN block decrypts to no format 0 block (first nibble, length, digits, fill):
    99, a security event, and nothing goes to a bank."""

    response_code = "99"


class UnknownKeyError(SecurityError):
    """No usable key of that name (none, revoked, or of another kind): A0 on the online
    channel ("unknown key"); the POS channel answers 77 before it asks."""

    response_code = "A0"


class KeyStoreError(StartupError):
    """The key store or the LMK cannot be used (mode, form, wrong LMK, a record that
    does not open); the text is the one line the operator reads."""


class OperatorInputError(SecurityError):
    """An operator command's input is refused (a component's KCV, the key's KCV not
    confirmed, a principal's third active key); the text names the check, never the
    value entered."""


class KcvMismatchError(SecurityError):
    """A key received under its parent does not match the KCV sent beside it (a key
    change's field 48, a sign-on's field 62): 30, and the key is not taken."""

    response_code = "30"
