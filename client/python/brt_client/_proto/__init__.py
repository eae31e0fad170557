"""Generated brt.v1 stubs (do not edit; regenerate with client/python/gen_stubs.py)."""
