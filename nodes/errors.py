"""Turn model-side errors into messages that name the node and the fix, and check every dropdown value first."""

from __future__ import annotations

import functools
import inspect
import math

from ..comfy_glue.node_errors import FaceSnapNodeError as FaceSnapNodeError  # the nodes' error type, exported here
from ..comfy_glue.node_errors import node_error
from ..models.errors import FaceSnapError, InvalidInputError


def combo_problem(schema, values: dict, skip=()) -> InvalidInputError | None:
    """The first dropdown value that is not one of its options. ComfyUI 0.3.75 does not check V3 dropdowns, and a
    hand-written or edited workflow can hold anything; inputs resolved elsewhere (model files) are in ``skip``."""
    for spec in schema.inputs:
        options = getattr(spec, "options", None)
        if spec.id in skip or options is None or spec.id not in values or values[spec.id] is None:
            continue
        if values[spec.id] not in options:
            shown = ", ".join(map(str, options[:12])) + (", ..." if len(options) > 12 else "")
            return InvalidInputError(f"{spec.id} = {values[spec.id]!r} is not one of its choices ({shown})",
                                     f"pick {spec.id} from its dropdown (the workflow may come from another version "
                                     "of the pack or have been edited by hand)")
    return None


def number_problem(values: dict) -> InvalidInputError | None:
    """The first number input that is NaN or infinite. ComfyUI's validation compares numbers with min and max, which
    NaN passes, and an API prompt can carry ``NaN`` (Python's JSON reader accepts it)."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            return InvalidInputError(f"{name} = {value} is not a finite number",
                                     f"set {name} to a number within its range (the workflow may have been edited "
                                     "by hand or made by a script)")
    return None


def reports_errors(execute):
    """Decorate a node's ``execute`` classmethod: dropdown values are checked against the schema first (except the
    inputs listed in the class's ``RESOLVED_INPUTS``) and number values for NaN and infinity, and FaceSnapErrors and
    MemoryErrors come out naming the node."""
    signature = inspect.signature(execute)

    @functools.wraps(execute)
    def wrapper(cls, *args, **kwargs):
        schema = cls.define_schema()
        try:
            values = signature.bind(cls, *args, **kwargs).arguments
            problem = combo_problem(schema, values, getattr(cls, "RESOLVED_INPUTS", ())) or number_problem(values)
            if problem is not None:
                raise problem
            return execute(cls, *args, **kwargs)
        except FaceSnapError as err:
            raise node_error(schema.node_id, err.message, err.fix) from err
        except MemoryError as err:
            raise node_error(schema.node_id, "ran out of memory", "lower the image sizes or the batch size of this "
                             "node's inputs and widgets") from err

    return wrapper
