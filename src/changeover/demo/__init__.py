"""``changeover demo``: the whole tool on embedded defaults, on one machine, with one command."""
