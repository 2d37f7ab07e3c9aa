"""A bank simulator that speaks bank-h2h.md over real TCP, for demos, tests and bench."""
