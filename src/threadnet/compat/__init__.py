"""Compatibility layers: other projects' APIs on threadnet.

``threadnet.compat.iothpy`` is the API of iothpy (the Python binding of libioth), so a
program written for iothpy runs on threadnet stacks by changing one import::

    import threadnet.compat.iothpy as iothpy
"""
