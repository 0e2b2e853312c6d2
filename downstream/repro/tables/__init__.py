"""One module per reproduced table; each has ``parse(argv, prog)`` (the rows) and ``main(argv, prog) -> int``."""
