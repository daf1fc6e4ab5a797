"""The I/O layer: the versioned phase-map file and the on-disk XLA compilation cache.

Files are written atomically (temporary file, then rename) and read without
pickle, with every declared size checked before anything is read.
"""
