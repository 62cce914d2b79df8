"""Models of the command line tool: two built in, or a user's saved ``.keras`` model.

Every model the tool trains has dict outputs ``{"embedding": (batch, dim)}``
plus ``"logits": (batch, num_classes)`` when the objective needs a softmax
head (margin terms own their class weights, so their models have no head).
Keras is imported inside the functions, after ``--backend`` is applied.
"""

import math
import pathlib


def _embedding_and_head(x, num_classes, embedding_dim, logits):
    import keras

    embedding = keras.layers.Dense(embedding_dim, name="embedding")(x)
    outputs = {"embedding": embedding}
    if logits:
        outputs["logits"] = keras.layers.Dense(num_classes, name="logits")(embedding)
    return outputs


def build_mlp(input_shape, num_classes, embedding_dim, logits=True, hidden=(64, 64)):
    """``inputs -> Dense(64, relu) -> Dense(64, relu) -> embedding [-> logits]``.

    The embedding is the linear "deep feature" of the center-loss paper, the
    logits the input of the softmax loss.
    """
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for index, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    return keras.Model(inputs, _embedding_and_head(x, num_classes, embedding_dim, logits), name="mlp")


def _image_shape(input_shape):
    """``(h, w, c)`` of an input: images as they are, flat square vectors as one-channel images."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return (*shape, 1)
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if len(shape) == 1 and side * side == shape[0]:
        return (side, side, 1)
    raise ValueError(
        f"model lenet: needs images (h, w[, c]) or flat square images; received samples of "
        f"shape {shape}. Use --model mlp."
    )


def build_lenet(input_shape, num_classes, embedding_dim, logits=True):
    """A small LeNet-style CNN in the spirit of the center-loss paper's MNIST network.

    Two blocks of two 3x3 convolutions (32 then 64 filters, PReLU as in the
    paper) each followed by 2x2 max-pooling (skipped once the image is smaller
    than 4 pixels), then the linear embedding and the logits. Flat square
    inputs (the 64-pixel digits) are reshaped to images.
    """
    import keras

    image = _image_shape(input_shape)
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = inputs if tuple(input_shape) == image else keras.layers.Reshape(image, name="as_image")(inputs)
    side = min(image[0], image[1])
    for block, filters in enumerate((32, 64), start=1):
        for index in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{block}_{index}")(x)
            x = keras.layers.PReLU(shared_axes=[1, 2], name=f"prelu{block}_{index}")(x)
        if side >= 4:
            x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
            side //= 2
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _embedding_and_head(x, num_classes, embedding_dim, logits), name="lenet")


# name -> builder(input_shape, num_classes, embedding_dim, logits=True)
MODELS = {"mlp": build_mlp, "lenet": build_lenet}


def is_model_file(value):
    """Whether a ``--model`` value names a file rather than a built-in model."""
    return str(value).endswith(".keras") or pathlib.Path(str(value)).suffix != "" or "/" in str(value)


def load_user_model(path, input_shape, num_classes, *, embedding_output, logits_output, logits=True):
    """A user's saved functional model, re-wired to ``{"embedding", "logits"}`` outputs.

    Args:
        path: a ``.keras`` file.
        input_shape: the data's sample shape (checked against the model's input).
        num_classes: the data's class count (checked against the logits width).
        embedding_output: name of the output (or layer) holding the embedding.
        logits_output: name of the output (or layer) holding the logits.
        logits: whether the objective needs the logits.

    Raises:
        ValueError: one line naming the file and what is wrong.
    """
    import keras

    file = pathlib.Path(path)
    if not file.is_file():
        raise ValueError(f"--model: no such file: {str(path)!r}.")
    try:
        model = keras.saving.load_model(file, compile=False)
    except Exception as error:  # noqa: BLE001 - any load failure is reported in one line
        raise ValueError(f"--model {path}: cannot load it as a Keras model: {str(error).splitlines()[0]}") from None
    if not getattr(model, "outputs", None) or not getattr(model, "inputs", None):
        raise ValueError(f"--model {path}: expected a functional or Sequential model; received a "
                         f"{type(model).__name__} subclass, whose outputs cannot be re-wired.")
    expected = tuple(input_shape)
    got = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if got is None or len(got) != len(expected) or any(g not in (None, e) for g, e in zip(got, expected)):
        shapes = [tuple(i.shape) for i in model.inputs]
        raise ValueError(f"--model {path}: expected one input of shape (batch, {', '.join(map(str, expected))}) "
                         f"for this data; the model has inputs {shapes}.")
    named = _named_outputs(model)
    wanted = {"embedding": embedding_output, **({"logits": logits_output} if logits else {})}
    outputs = {}
    for role, name in wanted.items():
        if name in named:
            outputs[role] = named[name]
            continue
        try:
            outputs[role] = model.get_layer(name).output
        except ValueError:
            raise ValueError(
                f"--{role}-output {name!r}: {path} has no output or layer of that name; its outputs "
                f"are {sorted(named)}."
            ) from None
    for role, tensor in outputs.items():
        if len(tensor.shape) != 2:
            raise ValueError(f"--{role}-output {wanted[role]!r} of {path}: expected shape (batch, n); "
                             f"received {tuple(tensor.shape)}.")
    if logits and outputs["logits"].shape[-1] != num_classes:
        raise ValueError(f"--logits-output {logits_output!r} of {path}: has {outputs['logits'].shape[-1]} "
                         f"units; the data has {num_classes} classes.")
    return keras.Model(model.inputs, outputs, name=model.name)


def _named_outputs(model):
    from lossweave import _keras_compat as keras_compat  # imports Keras: not at the CLI's import

    outputs = model.outputs
    names = getattr(model, "output_names", None) or [t.name for t in outputs]
    table = dict(zip(names, outputs))
    for tensor in outputs:  # also by the producing layer's name
        history = keras_compat.keras_history(tensor)
        if history is not None:
            table.setdefault(history[0].name, tensor)
    return table
