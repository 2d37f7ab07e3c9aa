"""Tools around the switch for demos, tests and the bench, never the switch itself:
a local PostgreSQL server (:mod:`switch.devtools.postgresql`) and the demo command
that runs the switch with its banks and that server (:mod:`switch.devtools.demo`)."""
