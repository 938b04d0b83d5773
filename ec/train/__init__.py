"""Trainers: one interface (:class:`Trainer`), one result (:class:`TrainResult`), several backends."""

from .base import (
    Budget,
    PhaseStats,
    Trainer,
    TrainResult,
    backend_availability,
    backend_names,
    get_backend,
    register_backend,
    train_students,
)

register_backend("flow", "ec.train.flow.backend:FlowTrainer")
register_backend("torch", "ec.train.torch_backend:TorchTrainer")
register_backend("julia", "ec.train.julia:JuliaTrainer")
register_backend("gn", "ec.train.gauss_newton:GaussNewtonTrainer")

__all__ = [
    "Budget",
    "PhaseStats",
    "Trainer",
    "TrainResult",
    "backend_availability",
    "backend_names",
    "get_backend",
    "register_backend",
    "train_students",
]
