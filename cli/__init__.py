"""ftmed's command line: the only place both frameworks meet, and only inside commands (lazy imports).

One module per command group; shared option aliases in `options.py`; the library does the work.
"""
