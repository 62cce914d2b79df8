"""One mixin for every Layer that draws from a ``keras.random.SeedGenerator`` (terms and strategies).

The generator's state is a Layer variable: it travels with the compiled step on
every backend, but Keras does not save it. The mixin saves it beside the
Layer's own variables, so that a reloaded term or strategy continues the same
sequence of draws.
"""

SEED_STATE = "seed_generator_state"
# Files written before the mixin was one: Partial FC class sampling saved under this key.
LEGACY_KEYS = ("class_sampling_seed_state",)


class SavesSeedState:
    """Saves ``self.seed_generator``'s state with the Layer (a generator of ``None``: nothing to save)."""

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if getattr(self, "seed_generator", None) is not None:
            store[SEED_STATE] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        saved = [k for k in (SEED_STATE, *LEGACY_KEYS) if k in keys]
        if saved and getattr(self, "seed_generator", None) is not None:
            self.seed_generator.state.assign(store[saved[0]])
        super().load_own_variables({k: store[k] for k in keys if k not in (SEED_STATE, *LEGACY_KEYS)})
