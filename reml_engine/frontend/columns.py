"""The data's columns as the design reads them: dtypes, categories, missing values.

formulaic reads numpy numbers, numpy booleans, object and ``str`` text and
categoricals as R's model.frame reads numbers, logicals and factors. pandas' other
dtypes are brought to those first (:func:`design_frame`): nullable strings and Arrow
strings (which formulaic takes for numbers) become object columns, nullable and Arrow
numbers float64, nullable booleans numpy bool. Unused categories are dropped as lme4
drops unused factor levels (:func:`drop_unused_categories`). Complex numbers and
columns mixing text and numbers are errors naming the column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ModelDataError

#: read_csv's default missing-value marks that are also plausible level names.
_NA_TEXT = ("NA", "None", "null", "NaN", "N/A", "")


def is_text(values: pd.Series) -> bool:
    """Text or categories (object, ``str``, pandas' string dtypes, categoricals)."""
    dtype = values.dtype
    return isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype)


def na_text_hint(data: pd.DataFrame, per_column: dict) -> str:
    """What to check when text columns lost rows: pandas.read_csv reads a level named
    "NA" or "None" as NaN (empty when no text column lost rows)."""
    text = {c: n for c, n in per_column.items() if is_text(data[c])}
    if not text:
        return ""
    counts = ", ".join(f"{c!r}: {n}" for c, n in text.items())
    return (
        f"text column(s) with NaN values ({counts}): pandas.read_csv reads the text "
        f"{', '.join(repr(t) for t in _NA_TEXT)} as NaN, so if a level is spelled so, read the file with "
        "keep_default_na=False"
    )


def column_dtypes(data: pd.DataFrame, columns) -> dict:
    """The dtype of each of ``columns`` that the data hold, without making a Series of
    each column (which costs more than the rest of a small fit's design)."""
    dtypes = dict(zip(data.columns, data.dtypes, strict=True))  # used columns are not duplicated
    return {c: dtypes[c] for c in columns if c in dtypes}


def column_values(data: pd.DataFrame, name):
    """The values of one column (a numpy array or a pandas extension array), without the
    Series ``data[name]`` would make: on a thousand rows, making a Series per column
    costs as much as reading it. The name must be the only column of its name."""
    position = data.columns.get_loc(name)
    getter = getattr(data, "_get_column_array", None)
    if getter is None or not isinstance(position, int):  # another pandas, or a repeated name
        return data[name].array if isinstance(data[name], pd.Series) else data[name].to_numpy()
    return getter(position)


def drop_unused_categories(data: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    """Categorical columns without the categories they never take, as R's
    ``model.frame(drop.unused.levels = TRUE)`` in lme4: the first category that occurs
    is the reference level, and no column of zeros is made for an absent one.

    Call it on the rows fitted: model.frame drops the rows with missing values first
    (``na.action``) and the unused levels after, so a level seen only in rows dropped
    for a missing value elsewhere is not a level of the fit (nor of a chunked fit).
    """
    unused = [
        c for c, dtype in dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories) > _categories_used(data, c)
    ]
    if not unused:
        return data
    data = data.copy(deep=False)
    for c in unused:
        data[c] = data[c].cat.remove_unused_categories()
    return data


def _categories_used(data: pd.DataFrame, name) -> int:
    """How many categories a categorical column takes (its ``nunique()``), from its codes."""
    values = column_values(data, name)
    if not isinstance(values, pd.Categorical):
        return int(data[name].nunique(dropna=True))
    codes = values.codes
    return int(np.count_nonzero(np.bincount(codes[codes >= 0], minlength=len(values.categories))))


def _object_column_types(values: pd.Series, name: str, where: str) -> None:
    """Text and numbers mixed in one object column would be sorted together as levels."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("mixed", "mixed-integer"):
        types = sorted({type(v).__name__ for v in values.dropna().iloc[:1000]})
        raise ModelDataError(
            f"column {name!r}{where} holds values of several types ({', '.join(types)}); make it one type, "
            f"e.g. text with .astype(str) or numbers with pd.to_numeric"
        )
    if kind == "complex":
        raise ModelDataError(f"column {name!r}{where} holds complex numbers; reml_engine fits real numbers")


def design_column(values: pd.Series, name: str, where: str = "") -> pd.Series | None:
    """The column in a dtype formulaic reads the way it reads numpy and object columns,
    or None when it already has one.

    formulaic takes pandas' nullable string dtypes (``string[python]``,
    ``string[pyarrow]``, Arrow strings) for numbers, so digit codes would become one
    slope and letters would fail; they become object columns (categorical, as text
    is). Nullable and Arrow numbers become float64 and nullable booleans numpy bool
    (0/1 for formulaic), with NaN for missing values.
    """
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return None
    if pd.api.types.is_complex_dtype(dtype):
        raise ModelDataError(
            f"column {name!r}{where} is complex (dtype {dtype}); reml_engine fits real numbers: use its real "
            "part or its modulus"
        )
    if isinstance(dtype, np.dtype):
        if pd.api.types.is_object_dtype(dtype):
            _object_column_types(values, name, where)
        return None
    if dtype == "str":  # pandas' default text dtype, which formulaic reads as categories
        return None
    present = values.notna().to_numpy()
    if pd.api.types.is_string_dtype(dtype):
        converted = np.where(present, values.to_numpy(dtype=object, na_value=None), np.nan)
    elif pd.api.types.is_bool_dtype(dtype):
        # formulaic reads numpy booleans as 0/1; with missing values, floats 0/1/NaN.
        converted = values.to_numpy(dtype=bool, na_value=False)
        if not present.all():
            converted = np.where(present, converted.astype(np.float64), np.nan)
    elif pd.api.types.is_numeric_dtype(dtype):
        converted = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        return None
    return pd.Series(converted, index=values.index, name=values.name)


def design_frame(data: pd.DataFrame, columns, where: str = "", dtypes: dict | None = None) -> pd.DataFrame:
    """``data`` with each of ``columns`` in a dtype formulaic reads correctly (see
    :func:`design_column`); the same frame when none needs converting. ``dtypes``, the
    columns' dtypes if known, saves reading them again."""
    converted = {}
    for c, dtype in (dtypes if dtypes is not None else column_dtypes(data, columns)).items():
        # Columns of numpy numbers, the usual case, are not read at all.
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            continue
        new = design_column(data[c], c, where)
        if new is not None:
            converted[c] = new
    if not converted:
        return data
    data = data.copy(deep=False)
    for c, values in converted.items():
        data[c] = values
    return data


def type_names(values) -> str:
    """The Python types of some values, for messages: ``"int, str"``."""
    return ", ".join(sorted({type(v).__name__ for v in values}))


#: pandas' names (infer_dtype) for object columns that hold only numbers or nothing.
NUMBERS_OR_NOTHING = ("empty", "integer", "floating", "mixed-integer-float")


def is_number_dtype(dtype) -> bool:
    """Numbers or booleans of any backend (numpy, nullable, Arrow), not categories."""
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return True  # the usual case, without pandas' slower dtype tests
    return not isinstance(dtype, pd.CategoricalDtype) and (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    )


def holds_numbers(values: pd.Series) -> bool:
    """Whether a column's dtype is numbers (see :func:`is_number_dtype`)."""
    return is_number_dtype(values.dtype)


def _numbers_hint(predictors: bool) -> str:
    if predictors:
        return "pass numbers (code a categorical predictor as indicator columns, or fit with rl.lmer and a formula)"
    return "the response must be numbers (convert text with pd.to_numeric)"


def float_array(values, what: str, allow_bool: bool = False) -> np.ndarray:
    """``values`` (an array, a list, a pandas object) as float64, or an error naming the
    column that is not real numbers; pandas' missing values become NaN. Booleans are
    0/1 with ``allow_bool`` (indicator columns of X), an error otherwise (a response)."""
    if isinstance(values, (pd.DataFrame, pd.Series)):
        frame = values.to_frame() if isinstance(values, pd.Series) else values
        for j, (name, column) in enumerate(frame.items()):
            dtype = column.dtype
            label = what if isinstance(values, pd.Series) else f"column {j} ({name!r}) of {what}"
            if pd.api.types.is_complex_dtype(dtype):
                raise ModelDataError(f"{label} is complex (dtype {dtype}); reml_engine fits real numbers")
            boolean = pd.api.types.is_bool_dtype(dtype)
            if (boolean and not allow_bool) or not (boolean or pd.api.types.is_numeric_dtype(dtype)):
                raise ModelDataError(f"{label} is not numeric (dtype {dtype}); {_numbers_hint(allow_bool)}")
        array = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        return array[:, 0] if isinstance(values, pd.Series) else array
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ModelDataError(f"{what} is complex (dtype {array.dtype}); reml_engine fits real numbers")
    if array.dtype.kind not in "iuf":
        try:
            converted = array.astype(np.float64)
        except (TypeError, ValueError):
            converted = None
        if converted is None or array.dtype.kind in "USM" or (array.dtype.kind == "b" and not allow_bool):
            raise ModelDataError(f"{what} is not numeric (dtype {array.dtype}); {_numbers_hint(allow_bool)}")
        return converted
    return array.astype(np.float64, copy=False)
