"""The switch's error hierarchy, shaped like h11's.

A *remote* protocol error means a peer sent something we cannot accept; it carries the
response code to answer with (or says the connection must close). A *local* protocol
error means our own code misused a codec: a bug, answered 96. A declined payment is not
an exception: it is a response.

This module imports nothing from the rest of the package, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Mapping


class SwitchError(Exception):
    """Base of every error the switch raises on purpose."""

    response_code: str = "96"


class RemoteProtocolError(SwitchError):
    """A peer sent bytes or a message that breaks the published interface."""

    response_code = "30"


class FramingError(RemoteProtocolError):
    """The byte stream cannot be split into frames; the connection must close."""


class MessageDecodeError(RemoteProtocolError):
    """A frame does not decode into a message of its dialect.

    ``mti`` and ``fields`` hold what could still be read (fields whose bounds were known
    are decoded past a bad one), so a channel can answer 30 when it can still address
    the response (MTI, 11 and 41), and close the connection otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        field: int | None = None,
        mti: str | None = None,
        fields: Mapping[int, str | bytes] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.mti = mti
        self.fields: dict[int, str | bytes] = dict(fields or {})


class LocalProtocolError(SwitchError):
    """Our own code asked a codec for something it cannot do: a bug, answered 96."""

    response_code = "96"


class MessageEncodeError(LocalProtocolError):
    """A message cannot be encoded in its dialect."""

    def __init__(self, message: str, *, field: int | None = None) -> None:
        super().__init__(message)
        self.field = field


class CardDataUnreadable(SwitchError):
    """Stored card data cannot be opened with the keys the switch has now."""

    response_code = "96"


class ConfigError(SwitchError):
    """The configuration cannot be loaded; raised at start-up, naming the key."""


class ConfigUnreadable(ConfigError):
    """The configuration file itself cannot be read (not there, not readable)."""


class StartupError(SwitchError):
    """The switch cannot start (a port in use, no file descriptors left for
    connections); its text is the one line the operator reads."""


class TransactionRefused(SwitchError):
    """A request is refused before or instead of reaching a bank, with a response code.

    ``field`` names the offending field when there is one, so an online client is told
    what is wrong and where.
    """

    def __init__(self, response_code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.response_code = response_code
        self.field = field
