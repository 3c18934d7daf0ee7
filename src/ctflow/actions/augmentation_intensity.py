"""Random intensity actions for training: gamma, contrast, blur, bias field and noise in HU.

Like the random noise and cutout actions of :mod:`ctflow.actions.augmentation`
(:class:`~ctflow.actions.augmentation.ApplyNoise`, :class:`~ctflow.actions.augmentation.Cutout`),
each draws its parameters from the item's own generator (:meth:`make_params`) and applies them
deterministically (:meth:`apply`), so a seeded run gives the same output whatever the thread
count, prefetch or engine, and the record in the item's history applies again exactly.

The random intensity actions (:class:`RandomGamma`, :class:`RandomContrast`,
:class:`RandomBlur`, :class:`RandomBiasField`, :class:`RandomNoise`) follow TorchIO's
parameterisation: each applies with probability ``p`` (otherwise the item is left as it was,
its record says ``{"applied": false}``), draws its parameters uniformly from ranges in
physical units (HU, mm), changes the images only (masks and lungs are labels: untouched) and
returns float32. Their per-scan functions are in :mod:`ctflow.ops.intensity_random`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ctflow.actions.augmentation import _SEED_HIGH
from ctflow.actions.base import ItemAction
from ctflow.errors import InvalidParameterError
from ctflow.validation import as_choice, as_float, as_int

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = [
    "RandomBiasField",
    "RandomBlur",
    "RandomContrast",
    "RandomGamma",
    "RandomNoise",
]

#: Largest ``|log_gamma|`` of ``random_gamma``: ``exp(±88)`` is a finite, positive float32 (the
#: gamma :func:`~ctflow.ops.intensity_random.adjust_gamma` computes with; beyond ~709 ``exp``
#: overflows, below ~-745 it gives a gamma of 0, which it refuses).
MAX_LOG_GAMMA = 88.0


class _RandomIntensity(ItemAction):
    """Shared parts of the random intensity actions: the probability ``p`` and the ranges.

    :meth:`make_params` always draws ``u ~ U(0, 1)`` first; the action applies when ``u < p``
    (so ``p=0`` never does, ``p=1`` always) and then draws its own parameters (:meth:`_draw`).
    Not applied, :meth:`apply` returns None: the item's arrays stay exactly as they were.
    """

    family = "augmentation"

    def _check_p(self) -> None:
        self._set("p", as_float(getattr(self, "p"), "p", self.name, lo=0.0, hi=1.0))  # noqa: B009

    def _range(
        self,
        what: str,
        *,
        single: str | None,
        lo: float = -math.inf,
        lo_open: bool = False,
        unit: str = "",
    ) -> tuple[float, float]:
        """Normalise field ``what`` to ``(low, high)`` floats, ``lo <= low <= high``; return it.

        ``single``: what one number ``d`` means — ``"symmetric"`` (-d, d), ``"from_zero"``
        (0, d), or None (a pair is required).
        """
        value = getattr(self, what)
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        pair_rule = "two finite numbers (low, high) with low <= high"
        if math.isfinite(lo):
            pair_rule += f", low {bound}"
        rule = {
            "symmetric": f"a number d >= 0 (meaning (-d, d)) or {pair_rule}",
            "from_zero": f"a number d >= 0 (meaning (0, d)) or {pair_rule}",
            None: pair_rule,
        }[single] + (f" {unit}" if unit else "")
        is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool | np.bool_
        )
        try:
            if is_number:
                if single is None:
                    raise ValueError
                d = as_float(value, what, self.name, lo=0.0)
                pair = (-d, d) if single == "symmetric" else (0.0, d)
            else:
                low, high = value
                pair = (as_float(low, what, self.name), as_float(high, what, self.name))
            ok = pair[0] <= pair[1] and (pair[0] > lo if lo_open else pair[0] >= lo)
        except (TypeError, ValueError, InvalidParameterError):
            ok = False
        if not ok:
            raise self.invalid(what, rule, value)
        out = (float(pair[0]), float(pair[1]))
        self._set(what, out)
        return out

    def _window(self, what: str) -> None:
        """Normalise field ``what`` to a HU window ``(lo, hi)``, ``lo < hi``."""
        value = getattr(self, what)
        try:
            low, high = value
            pair = (as_float(low, what, self.name), as_float(high, what, self.name))
            ok = pair[0] < pair[1]
        except (TypeError, ValueError, InvalidParameterError):
            ok = False
        if not ok:
            raise self.invalid(what, "two finite numbers (low, high) in HU with low < high", value)
        self._set(what, pair)

    def _draw(self, item: CTItem) -> dict[str, Any]:
        raise NotImplementedError

    def _apply(self, item: CTItem, images: NDArray[Any], params: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Decide whether the action applies to this item (``p``), then draw its parameters."""
        if not item.rng.random() < getattr(self, "p"):  # noqa: B009
            return {"applied": False}
        return {"applied": True, **self._draw(item)}

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> Any:
        """Apply the drawn ``params`` (None, i.e. unchanged, when the action did not apply)."""
        images = item.require_images(self.name)
        if not params.get("applied", True):
            return None
        return self._apply(item, images, params)


def _uniform(item: CTItem, bounds: Sequence[float], size: int | None = None) -> Any:
    """Uniform draw(s) in ``[low, high]`` as Python floats (JSON)."""
    low, high = bounds
    if size is None:
        return float(item.rng.uniform(low, high))
    return [float(v) for v in item.rng.uniform(low, high, size)]


class RandomGamma(_RandomIntensity):
    """Gamma-correct a HU window with ``gamma = exp(log_gamma)``, ``log_gamma`` drawn per item.

    Within ``hu_range = (lo, hi)`` values are normalised to ``t`` in [0, 1], raised to
    ``gamma`` and mapped back (``lo + (hi - lo) * t ** gamma``); values outside the window
    are clipped to it first (so the output lies in the window, as ``normalize_hu`` with the
    same window would make it anyway). ``gamma < 1`` brightens, ``gamma > 1`` darkens; the
    window's ends stay put. TorchIO's ``RandomGamma`` parameterisation: ``log_gamma ~ U(a,
    b)``, one number ``d`` meaning ``(-d, d)``. Applied with probability ``p``; recorded
    ``{"applied", "gamma"}``. Output float32 (:func:`ctflow.ops.intensity_random.adjust_gamma`).

    Parameters
    ----------
    log_gamma : float or (low, high), default (-0.3, 0.3)
        Range ``log(gamma)`` is drawn from, uniformly per item: one number ``d >= 0`` means
        ``(-d, d)``, a pair two finite numbers with ``low <= high``; both ends within
        [-88, 88] (``exp`` of them must be a finite, positive float32).
    hu_range : (low, high), default (-1000.0, 400.0)
        The HU window that is gamma-corrected (values outside are clipped to it first); two
        finite numbers with ``low < high``.
    p : float, default 1.0
        Probability in [0, 1] that an item is changed (0: never, 1: always).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> from ctflow.actions.augmentation_intensity import RandomGamma
    >>> b = cf.CTBatch.from_arrays([np.array([[[-1000, -300, 400]]], np.int16)])
    >>> b.set_random_state(0, 0)
    >>> b = RandomGamma(log_gamma=(0.69315, 0.69315))(b)  # gamma = 2
    >>> b.images.ravel().round(1).tolist(), round(b.history[0][-1]["params"]["gamma"], 3)
    ([-1000.0, -650.0, 400.0], 2.0)
    """

    name = "random_gamma"
    log_gamma: float | Sequence[float] = (-0.3, 0.3)
    hu_range: Sequence[float] = (-1000.0, 400.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        given = self.log_gamma
        low, high = self._range("log_gamma", single="symmetric")
        if max(-low, high) > MAX_LOG_GAMMA:
            # a larger bound gives a gamma float32 cannot hold (inf, or 0), or fails when drawn
            raise self.invalid(
                "log_gamma", f"within [-{MAX_LOG_GAMMA:g}, {MAX_LOG_GAMMA:g}] at both ends", given
            )
        self._window("hu_range")
        self._check_p()

    def _draw(self, item: CTItem) -> dict[str, Any]:
        return {"gamma": math.exp(_uniform(item, self.log_gamma))}  # type: ignore[arg-type]

    def _apply(self, item: CTItem, images: NDArray[Any], params: Mapping[str, Any]) -> Any:
        from ctflow.ops.intensity_random import adjust_gamma

        return adjust_gamma(images, float(params["gamma"]), self.hu_range, n_threads=item.n_threads)


class RandomContrast(_RandomIntensity):
    """Scale a HU window's contrast about its centre and shift it, by amounts drawn per item.

    A CT-specific contrast change: with ``window = (lo, hi)`` and centre ``c``, values inside
    the window become ``c + factor * (x - c) + shift``; values outside it move with the
    window's nearest edge (slope 1), so the map is continuous and increasing, nothing is
    clipped, and air and bone keep their own contrast
    (:func:`ctflow.ops.intensity_random.adjust_contrast`). ``factor ~ U(factor)`` (two numbers,
    ``> 0``), ``shift ~ U(shift_hu)`` in HU (one number ``d`` meaning ``(-d, d)``). Applied
    with probability ``p``; recorded ``{"applied", "factor", "shift_hu"}``. Output float32.

    Parameters
    ----------
    factor : (low, high), default (0.75, 1.25)
        Range of the contrast factor about the window's centre, drawn uniformly per item: two
        finite numbers with ``0 < low <= high`` (one number is refused).
    shift_hu : float or (low, high), default (-50.0, 50.0)
        Range of the shift, HU: one number ``d >= 0`` means ``(-d, d)``, a pair two finite
        numbers with ``low <= high``.
    window : (low, high), default (-1000.0, 400.0)
        The HU window whose contrast changes; two finite numbers with ``low < high``.
    p : float, default 1.0
        Probability in [0, 1] that an item is changed (0: never, 1: always).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> from ctflow.actions.augmentation_intensity import RandomContrast
    >>> b = cf.CTBatch.from_arrays([np.array([[[-1100, -300, 0]]], np.int16)])
    >>> b.set_random_state(0, 0)
    >>> RandomContrast(factor=(1.5, 1.5), shift_hu=0)(b).images.ravel().tolist()
    [-1450.0, -300.0, 150.0]
    """

    name = "random_contrast"
    factor: Sequence[float] = (0.75, 1.25)
    shift_hu: float | Sequence[float] = (-50.0, 50.0)
    window: Sequence[float] = (-1000.0, 400.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._range("factor", single=None, lo=0.0, lo_open=True)
        self._range("shift_hu", single="symmetric", unit="(HU)")
        self._window("window")
        self._check_p()

    def _draw(self, item: CTItem) -> dict[str, Any]:
        return {
            "factor": _uniform(item, self.factor),
            "shift_hu": _uniform(item, self.shift_hu),  # type: ignore[arg-type]
        }

    def _apply(self, item: CTItem, images: NDArray[Any], params: Mapping[str, Any]) -> Any:
        from ctflow.ops.intensity_random import adjust_contrast

        return adjust_contrast(
            images,
            float(params["factor"]),
            float(params["shift_hu"]),
            self.window,
            n_threads=item.n_threads,
        )


class RandomBlur(_RandomIntensity):
    """Gaussian blur with standard deviations (z, y, x) in mm drawn per item and axis.

    Each axis's standard deviation is drawn from ``std_mm`` (two numbers, or one number ``d``
    meaning ``(0, d)``: TorchIO's ``RandomBlur``) and converted to voxels with the item's
    spacing, so the blur is the same physical size on every scan. Edges repeat the border
    voxel; the kernel is scipy's (``gaussian_filter(mode="nearest", truncate=4)``), computed
    by a separable float32 numba kernel on the item's threads
    (:func:`ctflow.ops.intensity_random.gaussian_blur`). Applied with probability ``p``;
    recorded ``{"applied", "std_mm": [z, y, x]}``. Output float32.

    Parameters
    ----------
    std_mm : float or (low, high), default (0.0, 1.0)
        Range of the Gaussian's standard deviation in mm, drawn per item and axis (z, y, x):
        one number ``d >= 0`` means ``(0, d)``, a pair two finite numbers with
        ``0 <= low <= high``.
    p : float, default 1.0
        Probability in [0, 1] that an item is changed (0: never, 1: always).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> from ctflow.actions.augmentation_intensity import RandomBlur
    >>> img = np.zeros((1, 1, 5), np.int16)
    >>> img[0, 0, 2] = 100
    >>> b = cf.CTBatch.from_arrays([img], spacing=(1.0, 1.0, 0.5))
    >>> b.set_random_state(0, 0)
    >>> [round(float(v), 1) for v in RandomBlur(std_mm=(0.5, 0.5))(b).images.ravel()]  # 1 voxel
    [5.4, 24.2, 39.9, 24.2, 5.4]
    """

    name = "random_blur"
    std_mm: float | Sequence[float] = (0.0, 1.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        self._range("std_mm", single="from_zero", lo=0.0, unit="(mm)")
        self._check_p()

    def _draw(self, item: CTItem) -> dict[str, Any]:
        return {"std_mm": _uniform(item, self.std_mm, 3)}  # type: ignore[arg-type]

    def _apply(self, item: CTItem, images: NDArray[Any], params: Mapping[str, Any]) -> Any:
        from ctflow.ops.intensity_random import gaussian_blur

        std = [float(v) for v in params["std_mm"]]
        spacing = [float(v) for v in item.spacing]
        return gaussian_blur(images, std, spacing, n_threads=item.n_threads)


class RandomBiasField(_RandomIntensity):
    """Multiply attenuation above air by a smooth random field ``exp(polynomial)``.

    TorchIO's ``RandomBiasField``: a polynomial of degree ``order`` in normalised voxel
    coordinates ([-1, 1] along each axis) whose ``(order+1)(order+2)(order+3)/6``
    coefficients are drawn uniformly from ``coefficients`` (one number ``c`` meaning ``(-c,
    c)``). For CT the field scales the attenuation above air, ``out = -1000 + (x + 1000) *
    exp(P)`` where ``x > -1000`` HU (``x`` elsewhere), so air stays air and padding below it
    is untouched (:func:`ctflow.ops.intensity_random.apply_bias_field`). The field is evaluated
    slice by slice in float32, never stored full-size. Applied with probability ``p``; recorded
    ``{"applied", "coefficients": [...]}``. Output float32.

    Parameters
    ----------
    coefficients : float or (low, high), default 0.5
        Range every polynomial coefficient is drawn from, uniformly: one number ``c >= 0``
        means ``(-c, c)``, a pair two finite numbers with ``low <= high``.
    order : int, default 3
        Degree of the polynomial, an integer in [0, 10] (it has
        ``(order+1)(order+2)(order+3)/6`` coefficients).
    p : float, default 1.0
        Probability in [0, 1] that an item is changed (0: never, 1: always).

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> from ctflow.actions.augmentation_intensity import RandomBiasField
    >>> b = cf.CTBatch.from_arrays([np.array([[[-2048, -1000, 0]]], np.int16)])
    >>> b.set_random_state(0, 0)
    >>> out = RandomBiasField(coefficients=0.2, order=1)(b)
    >>> out.images.ravel()[:2].tolist(), len(out.history[0][-1]["params"]["coefficients"])
    ([-2048.0, -1000.0], 4)
    """

    name = "random_bias_field"
    coefficients: float | Sequence[float] = 0.5
    order: int = 3
    p: float = 1.0

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.ops.intensity_random import MAX_BIAS_ORDER

        self._range("coefficients", single="symmetric")
        self._set("order", as_int(self.order, "order", self.name, lo=0, hi=MAX_BIAS_ORDER))
        self._check_p()

    def _draw(self, item: CTItem) -> dict[str, Any]:
        from ctflow.ops.intensity_random import bias_field_size

        n = bias_field_size(self.order)
        return {"coefficients": _uniform(item, self.coefficients, n)}  # type: ignore[arg-type]

    def _apply(self, item: CTItem, images: NDArray[Any], params: Mapping[str, Any]) -> Any:
        from ctflow.ops.intensity_random import apply_bias_field

        coef = [float(v) for v in params["coefficients"]]
        return apply_bias_field(images, coef, self.order, n_threads=item.n_threads)


class RandomNoise(_RandomIntensity):
    """Add Gaussian noise in HU whose standard deviation is drawn per item.

    ``std ~ U(std_hu)`` (one number ``d`` meaning ``(0, d)``: TorchIO's ``RandomNoise``).
    ``kind="gaussian"``: the same noise everywhere (as
    :class:`~ctflow.actions.augmentation.ApplyNoise`);
    ``kind="lowdose"``: the standard deviation grows with attenuation, ``std * sqrt(max(1 +
    HU / 1000, 0.05))`` (``std`` at water, ``std * sqrt(2)`` at 1000 HU) — an image-domain
    approximation of quantum noise; Poisson noise on simulated projections is out of scope
    (:func:`ctflow.ops.intensity_random.add_hu_noise`). The noise field's seed is drawn too.
    Applied with probability ``p``; recorded ``{"applied", "std_hu", "seed"}``. Output
    float32.

    Parameters
    ----------
    std_hu : float or (low, high), default (0.0, 25.0)
        Range of the noise's standard deviation in HU, drawn uniformly per item: one number
        ``d >= 0`` means ``(0, d)``, a pair two finite numbers with ``0 <= low <= high``.
    p : float, default 1.0
        Probability in [0, 1] that an item is changed (0: never, 1: always).
    kind : {"gaussian", "lowdose"}, default "gaussian"
        "gaussian": the same standard deviation everywhere; "lowdose": it grows with
        attenuation, ``std * sqrt(max(1 + HU / 1000, 0.05))``.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> from ctflow.actions.augmentation_intensity import RandomNoise
    >>> b = cf.CTBatch.from_arrays([np.zeros((4, 64, 64), np.int16)])
    >>> b.set_random_state(0, 0)
    >>> round(float(RandomNoise(std_hu=(10.0, 10.0))(b).images.std()), 0)
    10.0
    """

    name = "random_noise"
    std_hu: float | Sequence[float] = (0.0, 25.0)
    p: float = 1.0
    kind: str = "gaussian"

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        from ctflow.ops.intensity_random import NOISE_KINDS

        self._range("std_hu", single="from_zero", lo=0.0, unit="(HU)")
        self._check_p()
        as_choice(self.kind, NOISE_KINDS, "kind", self.name)

    def _draw(self, item: CTItem) -> dict[str, Any]:
        std = _uniform(item, self.std_hu)  # type: ignore[arg-type]
        return {"std_hu": std, "seed": int(item.rng.integers(_SEED_HIGH))}

    def _apply(self, item: CTItem, images: NDArray[Any], params: Mapping[str, Any]) -> Any:
        from ctflow.ops.intensity_random import add_hu_noise

        rng = np.random.default_rng(int(params["seed"]))
        return add_hu_noise(images, float(params["std_hu"]), rng, kind=self.kind)  # type: ignore[arg-type]
