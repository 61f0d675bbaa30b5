"""`one_line` and `shorten`: every error message built from an exception is one line."""

from __future__ import annotations

from catsdogs.errors import one_line, shorten


def test_one_line_collapses_cuts_and_names_the_type_when_empty():
    assert one_line(ValueError("bad\n   input\tfile")) == "bad input file"
    assert one_line(KeyError()) == "KeyError"
    long = one_line(RuntimeError("x" * 500))
    assert len(long) == 300 and long.endswith("...")
    assert one_line(RuntimeError("x" * 500), None) == "x" * 500


def test_first_line_drops_the_rest():
    assert one_line(OSError("cannot identify image file\nTraceback ..."), first_line=True) == "cannot identify image file"
    assert shorten("  a  b ", 80) == "a b"
    assert shorten("abcdef", 5) == "ab..."
