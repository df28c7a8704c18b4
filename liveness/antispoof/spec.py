"""What an anti-spoof model needs around it, read from its ``config.pbtxt`` ``parameters``.

Every anti-spoof model is data: a folder ``<repository>/<name>/`` with ``config.pbtxt`` and
``<version>/model.onnx``.  The converters write these parameters for the models they build;
an operator writes them by hand for their own model (README "Adding your own anti-spoof model").
All values are Triton string parameters (``parameters { key: "crop" value { string_value:
"silentface" } }``); Triton ignores them, our service reads them here.

=================  ========  =====================================================================
parameter          required  meaning
=================  ========  =====================================================================
``crop``           yes       ``silentface``: Silent-Face's ``CropImage._get_new_box`` (box scaled by
                             ``crop_scale`` around its centre, clamped and shifted inside the image),
                             then a bilinear resize to ``input_size``;
                             ``square_reflect``: SuriAI's square of side ``int(crop_scale * max(w, h))``
                             centred on the (integer-truncated) box, ``BORDER_REFLECT_101`` outside
                             the image, then letterboxed to ``input_size`` (Lanczos-4 up, area down,
                             reflect padding)
``crop_scale``     yes       float > 0, e.g. ``2.7``
``input_size``     yes       int, the model's square input side S (must match the ``input`` dims)
``color``          yes       ``BGR`` or ``RGB``: channel order of the input tensor
``input_divisor``  no (1)    float > 0
``input_mean``     no (0)    3 floats, comma-separated, in ``color`` order (or one for all channels)
``input_std``      no (1)    3 floats > 0, same layout
``live_class``     yes       int: the output column of the live (bona fide) class
``activation``     yes       ``softmax`` (p(live) = softmax(logits)[live_class]) or
                             ``sigmoid_diff`` (2 classes: sigmoid(logit[live] - logit[other]), which
                             equals the 2-class softmax, written the way SuriAI's upstream does)
=================  ========  =====================================================================

Input tensor: ``(N, 3, S, S)`` float32, NCHW, pixel values ``x`` in 0..255 mapped to
``(x / input_divisor - input_mean) / input_std`` per channel, computed in float32.  A divisor
rather than a multiplier, so the usual recipes are reproduced bit for bit: raw 0..255 (divisor 1),
``/255`` (255), ``x/127.5 - 1`` (127.5, mean 1), ``(x - 127.5)/128`` (128, mean 0.99609375),
ImageNet (255, mean 0.485,0.456,0.406, std 0.229,0.224,0.225), Caffe means (1, mean 104,117,123).

The config must also say ``max_batch_size >= 1`` (the service batches crops along dim 0; an ONNX
file whose batch dim is fixed to 1 needs ``max_batch_size: 1``), one FP32 input ``[3, S, S]``,
and a first output ``[K]`` with K >= 2 logits.  Other parameters (``role``, ``licence``,
``upstream``, notes) are informative; a ``role`` other than ``antispoof`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from liveness.inference.repository import ModelConfig

CropRule = Literal["silentface", "square_reflect"]
Color = Literal["BGR", "RGB"]
Activation = Literal["softmax", "sigmoid_diff"]

DOCS = 'README "Adding your own anti-spoof model"'


class AntiSpoofConfigError(ValueError):
    """A model's config.pbtxt does not describe a usable anti-spoof model (names model and parameter)."""


@dataclass(frozen=True)
class AntiSpoofSpec:
    model: str
    crop: CropRule
    crop_scale: float
    input_size: int
    color: Color
    live_class: int
    activation: Activation
    num_classes: int
    input_divisor: float = 1.0
    input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    input_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "AntiSpoofSpec":
        name, params = cfg.name, cfg.parameters

        def fail(msg: str) -> AntiSpoofConfigError:
            return AntiSpoofConfigError(f"anti-spoof model {name!r} ({cfg.path / 'config.pbtxt'}): {msg}; see {DOCS}")

        def raw(key: str, default: str | None = None) -> str:
            value = params.get(key, default)
            if value is None:
                raise fail(f"parameter {key!r} is missing")
            return value.strip()

        def choice(key: str, options: tuple[str, ...]) -> str:
            value = raw(key)
            if value not in options:
                raise fail(f"parameter {key!r} is {value!r}; expected one of {', '.join(options)}")
            return value

        def number(key: str, kind: type, default: str | None = None, positive: bool = False) -> float | int:
            value = raw(key, default)
            try:
                v = kind(value)
            except ValueError:
                raise fail(f"parameter {key!r} is {value!r}, not {'an integer' if kind is int else 'a number'}") from None
            if v != v or v in (float("inf"), float("-inf")) or (positive and v <= 0) or v < 0:
                raise fail(f"parameter {key!r} is {value!r}; expected a {'positive' if positive else 'non-negative'} finite value")
            return v

        def triple(key: str, default: str, positive: bool = False) -> tuple[float, float, float]:
            value = raw(key, default)
            try:
                vals = [float(p) for p in value.split(",")]
            except ValueError:
                raise fail(f"parameter {key!r} is {value!r}, not comma-separated numbers") from None
            if len(vals) == 1:
                vals *= 3
            if len(vals) != 3 or any(v != v or abs(v) == float("inf") for v in vals):
                raise fail(f"parameter {key!r} is {value!r}; expected 1 or 3 finite numbers")
            if positive and any(v <= 0 for v in vals):
                raise fail(f"parameter {key!r} is {value!r}; every value must be > 0")
            return (vals[0], vals[1], vals[2])

        role = params.get("role", "antispoof").strip()
        if role != "antispoof":
            raise fail(f"parameter 'role' is {role!r}: not an anti-spoof model")
        crop = choice("crop", get_args(CropRule))
        crop_scale = float(number("crop_scale", float, positive=True))
        size = int(number("input_size", int, positive=True))
        color = choice("color", get_args(Color))
        activation = choice("activation", get_args(Activation))
        live = int(number("live_class", int))
        divisor = float(number("input_divisor", float, "1", positive=True))
        mean = triple("input_mean", "0")
        std = triple("input_std", "1", positive=True)

        # The tensors the service will send and read, as the same config tells Triton.
        if cfg.max_batch_size < 1:
            raise fail(f"max_batch_size is {cfg.max_batch_size}; crops are batched along dim 0, so it must be >= 1 "
                       "(1 for an ONNX file whose batch dim is fixed to 1)")
        if len(cfg.inputs) != 1:
            raise fail(f"expected exactly one input tensor, config has {len(cfg.inputs)}")
        inp = cfg.inputs[0]
        if inp.dtype != "TYPE_FP32":
            raise fail(f"input {inp.name!r} is {inp.dtype}; expected TYPE_FP32")
        if len(inp.dims) != 3 or inp.dims[0] != 3 or any(d not in (-1, size) for d in inp.dims[1:]):
            raise fail(f"input {inp.name!r} dims {list(inp.dims)} do not match [3, {size}, {size}] (input_size {size})")
        if not cfg.outputs:
            raise fail("config has no output tensor")
        out = cfg.outputs[0]
        if len(out.dims) != 1 or out.dims[0] < 2:
            raise fail(f"first output {out.name!r} dims {list(out.dims)}; expected [K] class logits with K >= 2")
        k = int(out.dims[0])
        if live >= k:
            raise fail(f"parameter 'live_class' is {live}, but output {out.name!r} has only {k} classes")
        if activation == "sigmoid_diff" and k != 2:
            raise fail(f"activation 'sigmoid_diff' needs 2 classes, output {out.name!r} has {k}")
        return cls(name, crop, crop_scale, size, color, live, activation, k, divisor, mean, std)  # type: ignore[arg-type]
