"""The default ``flow`` backend: Float64 gradient flow followed by a second-order finish.

Modules
-------
kernels
    Loss, gradient and exact Hessian of the mean squared error of an :class:`ec.mlp.MLPSpec`
    (fused numba kernels for one hidden layer in ``_shallow``, activations in
    ``_activations_nb``; for deeper networks the Hessian in Kronecker form, ``_deep``).
objective
    The loss in the trainable coordinates, with best-point tracking and stopping rules.
ode
    Phase 1: the gradient-flow ODE ``d theta / dt = -grad L`` (exponential Rosenbrock-Euler
    with the exact Hessian, or a scipy solver).
newton
    Phase 2: Newton trust region with the exact Hessian, or BFGS / L-BFGS for large networks.
backend
    :class:`FlowTrainer`, the :class:`ec.train.base.Trainer` that ties them together.
"""

from .kernels import MSE, hessian, loss, loss_grad

__all__ = ["MSE", "hessian", "loss", "loss_grad"]
