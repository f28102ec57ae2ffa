"""Opt-in torch.compile of the solver's ConvGRU step, the loop that runs T times per forward.

Not on by default: compiling takes minutes on a small CPU (and again for each new process), and the gain
depends on the machine; `python -m bench --compile` measures it against eager execution.
"""

from __future__ import annotations

import torch

from rlan.model.rlan import RLAN


def compile_solver_cell(model: RLAN, **options) -> RLAN:
    """Compile `model.solver.cell`'s first-step and later-step functions in place; returns the model.

    Shapes are marked dynamic (canvas sides and pair counts vary by batch); `options` go to torch.compile.
    The weights and the state dict are untouched.
    """
    cell = model.solver.cell
    options = {"dynamic": True, **options}
    cell.first = torch.compile(cell.first, **options)
    cell.step = torch.compile(cell.step, **options)
    return model
