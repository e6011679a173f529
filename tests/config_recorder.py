"""A config that records which fields are read (tests of the program signature's completeness)."""

import ml_collections

_WHOLE = ("to_dict", "to_json", "to_json_best_effort", "items", "values", "keys", "copy_and_resolve_references",
          "__iter__", "__len__", "__eq__")


class Recorder:
    """Wraps a ``ConfigDict``: every field read (attribute, item, ``get``, ``in``) adds its dotted
    path to ``reads``; reading a whole section (``to_dict``, ``items``, ...) adds the section."""

    def __init__(self, node, reads: set, path: str = ""):
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_path", path)

    def _wrap(self, key, value):
        path = f"{self._path}.{key}" if self._path else str(key)
        if isinstance(value, ml_collections.ConfigDict):
            return Recorder(value, self._reads, path)
        self._reads.add(path)
        return value

    def __getattr__(self, key):
        node = object.__getattribute__(self, "_node")
        if key in _WHOLE or (key not in node and hasattr(node, key)):  # a ConfigDict method
            if key in _WHOLE:
                self._reads.add(self._path or "*")
            return getattr(node, key)
        return self._wrap(key, getattr(node, key))

    def __getitem__(self, key):
        return self._wrap(key, self._node[key])

    def get(self, key, default=None):
        return self._wrap(key, self._node.get(key, default)) if key in self._node else default

    def __contains__(self, key):
        return key in self._node

    def __setattr__(self, key, value):
        raise AttributeError("a recorded config is read-only")
