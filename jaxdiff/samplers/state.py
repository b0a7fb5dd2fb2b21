"""State a sampler carries for its model without knowing what it is: a :class:`StatefulModel` (a previous x0
estimate for self-conditioning, a guidance momentum) has its state in a cell while the sampler traces, and
:func:`~jaxdiff.samplers.common.scan_steps` threads the cell through the scan's carry beside the sampler's own."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax


class StatefulModel(NamedTuple):
    """A model function with state that a sampler carries from step to step without knowing what it is (a
    previous x0 estimate for self-conditioning, a guidance momentum): ``fn(x, t, cond, state) -> (output,
    new_state)`` and ``init(x_T) -> state`` (a pytree; ``new_state`` has its structure, shapes and dtypes).

    Every evaluation of a step sees the state the previous step left; the state advances once per step, to
    the ``new_state`` of the step's first evaluation (the model at the step's start ``(x_t, t)``). A step taken
    before a sampler's loop advances it the same way. Any sampler that loops through
    :func:`~jaxdiff.samplers.common.scan_steps` takes one (all but ``ode``, ``annealed_langevin``, ``ddpm`` and
    ``pc`` with a corrector, which refuse it with a named error)."""

    fn: Callable
    init: Callable


def refuse_state(model_fn, sampler: str):
    """A named error when ``sampler`` (one that cannot carry a state) is given a :class:`StatefulModel`."""
    if isinstance(model_fn, StatefulModel):
        raise ValueError(f"{sampler} cannot carry a stateful model's state (a step's first evaluation is not in "
                         "the loop over the grid's steps); use a sampler over a fixed grid such as ddim, heun, "
                         "dpmpp_2m or unipc")


class StateCell:
    """Where a stateful model's state lives while a sampler traces: ``state`` is what evaluations read,
    ``next`` the first evaluation's new state in the current step (None until then)."""

    def __init__(self):
        self.state, self.next = None, None

    def advance(self):
        if self.next is not None:
            self.state, self.next = self.next, None


def with_state_cell(model_fn):
    """``(plain_model_fn(x, t, cond), cell)``: a stateful model read through its cell (the step's first
    evaluation sets the next step's state); a plain model function as it is, with no cell."""
    if not isinstance(model_fn, StatefulModel):
        return model_fn, None
    cell = StateCell()

    def plain(x, t, cond):
        out, new = model_fn.fn(x, t, cond, cell.state)
        if cell.next is None:  # the step's first evaluation sets the next step's state
            cell.next = new
        return out

    return plain, cell


def scan_carrying_state(cell: StateCell, step: Callable, carry, xs, return_trajectory: bool):
    """``lax.scan`` of ``step(carry, *xs_i)`` with the cell's state in the carry: each step's evaluations read
    the state the previous step left, and the step's first evaluation gives the next one."""
    cell.advance()  # a step taken before the loop

    def body(c, inp):
        c, cell.state, cell.next = c[0], c[1], None
        new_c = step(c, *inp)
        new_state = cell.state if cell.next is None else cell.next
        cell.next = None
        return (new_c, new_state), (new_c[0] if return_trajectory else None)

    (carry, cell.state), traj = jax.lax.scan(body, (carry, cell.state), xs)
    return carry, traj
