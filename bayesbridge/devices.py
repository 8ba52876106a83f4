"""Where torch computations run: validation of ``device=`` arguments.

Every torch component of bayesbridge (codecs, latent dynamics, inference engines, the
bridge) takes ``device=``. ``None`` or ``"cpu"`` keeps everything on the CPU (the default and
the only device CI uses); ``"cuda"`` / ``"cuda:n"`` moves the model, the observations and the
random-number generator to that GPU, and every tensor an engine creates follows its inputs'
device. Results are moved back with :meth:`bayesbridge.infer.AssimilationResult.cpu`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from bayesbridge.errors import ParameterError

__all__ = ["resolve_device", "resolve_optional_device", "generator_on", "single_torch_thread"]


def resolve_device(device: str | torch.device, name: str = "device") -> torch.device:
    """Validate a ``device=`` argument (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).

    Parameters
    ----------
    device : str or torch.device
        Requested device.
    name : str
        Argument name used in error messages.

    Returns
    -------
    torch.device

    Raises
    ------
    ParameterError
        For a string torch does not understand, a device type other than cpu/cuda, or a CUDA
        device on a machine without CUDA (or with fewer GPUs than the index asks for).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ParameterError(
            f"{name}: expected 'cpu', 'cuda' or 'cuda:<index>', got {device!r}; pass device='cpu' to stay on the CPU."
        ) from err
    if dev.type not in ("cpu", "cuda"):
        raise ParameterError(
            f"{name}: expected 'cpu', 'cuda' or 'cuda:<index>', got {device!r} (device type {dev.type!r} is not "
            f"supported); pass device='cpu'."
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(
                f"{name}: {device!r} requested but CUDA is not available on this machine (torch "
                f"{torch.__version__}, built with CUDA {torch.version.cuda}); use device='cpu' or install a CUDA build "
                f"of torch on a GPU machine."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(
                f"{name}: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                f"use an index below that, e.g. 'cuda:0'."
            )
    return dev


def resolve_optional_device(device: str | torch.device | None, name: str = "device") -> torch.device | None:
    """``None`` stays ``None`` (keep the inputs where they are); anything else as :func:`resolve_device`.

    Parameters
    ----------
    device : str, torch.device or None
        Requested device, or ``None`` for "wherever the inputs already are".
    name : str
        Argument name used in error messages.
    """
    return None if device is None else resolve_device(device, name)


def generator_on(seed: int, device: torch.device | None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (CPU when ``None``) seeded with ``seed``.

    Note that CPU and CUDA generators produce different streams for the same seed: results on
    different devices agree in distribution, not draw by draw.

    Parameters
    ----------
    seed : int
        Seed of the generator.
    device : torch.device or None
        Where the generator lives (CPU when ``None``).
    """
    dev = torch.device("cpu") if device is None else device
    return torch.Generator(device=dev).manual_seed(int(seed))


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run the enclosed torch work on one intra-op thread, restoring the previous count after.

    Filters, decoding and moments apply thousands of small ``(member, latent)`` operations; on
    them OpenMP worker threads only spin, and on a loaded two-core machine each op becomes
    milliseconds slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
