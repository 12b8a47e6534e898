"""rdmaps for PyTorch: port a training script in three lines.

    import rdmaps.torch as rps
    rps.init()                                  # server ranks serve here and exit
    opt = rps.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   model.named_parameters(), staleness=2, dc=True)
    rps.broadcast_parameters(model.state_dict(), root_rank=0)

The servers apply the updates (SGD, momentum, DC-ASGD); workers push each
gradient as soon as backward produces it and pull fresh parameters in step().
"""

from .optimizer import DistributedOptimizer
from .runtime import broadcast_parameters, init, is_initialized, placement, rank, shutdown, size

__all__ = ["init", "shutdown", "is_initialized", "placement", "rank", "size", "DistributedOptimizer",
           "broadcast_parameters"]
