"""Bytes on the wire; knows no Things."""
