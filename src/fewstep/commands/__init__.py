"""One module per CLI verb: ``run(args)`` does the work that cli.py parsed and validated."""
