"""Benchmarks shipped with the package (`stylestream bench ...`); scripts for development live in bench/."""
