"""The files runs and reports exchange: atomic JSON writes, the result record and its schema,
per-example predictions. Imports nothing else of peftbench."""
