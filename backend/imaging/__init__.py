"""Pure image coding shared by features: decoding and encoding, no HTTP or storage."""
