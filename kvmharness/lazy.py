"""A lock-free cached property.

functools.cached_property takes a lock on every first access up to Python 3.11 (removed in
3.12); a bulk `kvmharness probe` makes thousands of specs and guest codes whose properties are
each read once, and on this host that lock was a visible part of the per-probe cost. The
harness never computes the same property of one object from two threads at once in a way that
matters: the worst case is computing a pure value twice.
"""

from __future__ import annotations


class cached_property:
    """Compute on first access, then store in the instance's __dict__ (a non-data descriptor:
    the stored value is found before this descriptor from then on)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value
