"""Where one drag step's time goes (`python -m draggan bench --profile`)."""
from __future__ import annotations


def run_profile(sources, device, steps, precision, official, as_json) -> int:
    raise NotImplementedError
