"""The default ``flow`` backend: Float64 gradient flow followed by a second-order finish.

Modules
-------
kernels
    Loss, gradient and exact Hessian of the mean squared error of an :class:`ec.mlp.MLPSpec`.
ode
    Phase 1: the gradient-flow ODE ``d theta / dt = -grad L`` integrated by a stiff solver.
newton
    Phase 2: Newton trust region with the exact Hessian, or BFGS for large networks.
backend
    :class:`FlowTrainer`, the :class:`ec.train.base.Trainer` that ties them together.
"""

from .kernels import MSE, hessian, loss, loss_grad

__all__ = ["MSE", "hessian", "loss", "loss_grad"]
