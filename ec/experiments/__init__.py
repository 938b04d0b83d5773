"""The command pipelines: teacher -> queries -> students -> reconstruction -> metrics -> run
directory, one module per experiment (``ec synth`` / ``ec cluster``, ``ec grid``,
``ec mnist`` / ``ec teacher``). The CLI parses options and calls these."""
