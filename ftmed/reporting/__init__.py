"""The comparison report: what `ftmed report` and `ftmed compare` write, read from run records only.

Presentation lives here, above the core: the core computes the statistics (`ftmed_core.stats`) and keeps
the records; this package turns a set of records into the report's rows, renders them as markdown, CSV and
JSON, draws the plots and writes it all into a runs folder.
"""
