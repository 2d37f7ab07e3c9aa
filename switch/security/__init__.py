"""Channel security (security.md): the security-module port, its software
implementation, the algorithms, and the key store under the LMK."""
