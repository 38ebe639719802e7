"""The torch device a training loop should use."""

from __future__ import annotations

import torch

from factory.train.session import Session, current_session


def choose_device() -> torch.device:
    """CUDA when this process can use it, else the CPU.

    Inside a Ray Train worker the device is the GPU Ray assigned to it
    (`ray.train.torch.get_device()`), or the CPU if it was assigned none. A factory cluster may
    declare simulated GPUs on machines without CUDA; Ray then assigns the worker a GPU id that torch
    cannot open, so CUDA is used only when `torch.cuda.is_available()` says it is really there.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if current_session() is Session.TRAIN:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda", torch.cuda.current_device())
