"""The `ffe` command line: the composition root, the only package that imports both the engine and the console."""
