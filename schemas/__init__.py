"""The contracts: JSON Schema files and the Python types and codecs that enforce them."""
