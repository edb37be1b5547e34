"""Benchmarks behind ``make bench`` (``python -m bench``): each module's ``main()`` prints its figures."""

from __future__ import annotations
