"""Benchmarks shipped with the package (`stylestream bench ...`); scripts for development live in bench/."""

from pathlib import Path

_OUTPUT_SUFFIXES = (".md", ".json", ".jpg", ".png")


def output_path(prefix: str | Path, suffix: str) -> Path:
    """PREFIX + suffix for a benchmark's `-o PREFIX`: 'out/flicker-0.5' -> 'out/flicker-0.5.md' (a dot in
    the prefix is not an extension to replace), 'out/gpu.md' -> 'out/gpu.json' (a suffix we write is)."""
    prefix = Path(prefix)
    if prefix.suffix in _OUTPUT_SUFFIXES:
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + suffix)
