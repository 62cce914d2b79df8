"""The base of the small configured objects a tuple loss takes (distances, reducers, miners), and their lookup.

They hold no variables: a constructor's arguments are the whole object, so
``get_config`` returns them (the attributes named in ``_config``) and a
``.keras`` file stores them inside the loss's config.
"""

import keras


class ConfigObject:
    """A stateless object whose config is its constructor arguments (``_config`` names them)."""

    _config = ()

    def get_config(self):
        return {name: getattr(self, name) for name in self._config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._config)
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


def resolve(value, base, names, argument, owner):
    """``value`` as a ``base`` object: itself, a name of ``names`` (made anew), or a serialized config; ``None``: ``None``.

    Args:
        value: an instance of ``base``, a key of ``names``, or a dict written
            by ``keras.saving.serialize_keras_object``.
        base: the family's base class.
        names: ``{name: factory}`` of the names the family accepts.
        argument: the argument's name, for the error.
        owner: the class (or its name) that takes the argument, for the error.
    """
    if value is None or isinstance(value, base):
        return value
    if isinstance(value, str) and value in names:
        return names[value]()
    if isinstance(value, dict):
        restored = keras.saving.deserialize_keras_object(value)
        if isinstance(restored, base):
            return restored
    who = owner if isinstance(owner, str) else type(owner).__name__
    raise ValueError(
        f"{who}: `{argument}` must be one of {tuple(names)} or a {base.__module__}.{base.__name__} object; "
        f"received {value!r}. See `{base.__module__}` for the classes."
    )
