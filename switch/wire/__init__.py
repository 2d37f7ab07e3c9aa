"""Sans-IO protocol layer: framing and codecs. Bytes in, messages out; no trio here."""
