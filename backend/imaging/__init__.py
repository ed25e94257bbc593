"""Pure image decoding shared by every feature: header checks, bounded decodes, layout checks.

No HTTP, database or storage here: bytes in, arrays or domain errors out.
"""
