"""Consumer credit (credit.md): the instalment arithmetic (``plan``) and the money of
one account (``book``). Sans-IO, integer fen."""
