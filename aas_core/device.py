"""Choose the compute device and dtype once (cuda > mps > cpu); engines receive them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Optional

if TYPE_CHECKING:
    import torch

DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]
DtypeChoice = Literal["auto", "float32", "float16", "bfloat16"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")
DTYPE_CHOICES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Runtime:
    """The device and dtype every model of a run uses."""

    device: str
    dtype_name: str

    @property
    def torch_device(self) -> "torch.device":
        """The device as a torch object."""
        import torch

        return torch.device(self.device)

    @property
    def dtype(self) -> "torch.dtype":
        """The dtype as a torch object."""
        import torch

        return getattr(torch, self.dtype_name)


def pick_runtime(device: Optional[str] = None, dtype: Optional[str] = None) -> Runtime:
    """Resolve `auto` (or $AAS_DEVICE / $AAS_DTYPE) to a concrete device and dtype."""
    import torch

    device = device or os.environ.get("AAS_DEVICE", "auto")
    dtype = dtype or os.environ.get("AAS_DTYPE", "auto")
    if device not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype == "auto":
        # Half precision only pays off (and is only well supported) on accelerators.
        if device == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device == "mps":
            dtype = "float16"
        else:
            dtype = "float32"
    return Runtime(device=device, dtype_name=dtype)
