"""A tiny training run for tests/test_training.py, launched as one process or by ``torchrun``.

A 2-layer perceptron regresses 64 synthetic samples (fixed seed) with the one training loop; the global batch
is ``--batch`` (each of the ``WORLD_SIZE`` ranks takes its part). Rank 0 writes ``--out`` (torch.save of
``{"history", "params", "world_size"}``). ``--stop-after k`` interrupts the run after epoch ``k`` (its
checkpoint written), as a killed run would be; the next launch with the same ``--checkpoint`` resumes.
"""

from __future__ import annotations

import argparse

import torch

from cryoscape.data.loader import shuffled_batches
from cryoscape.methods.training import TrainConfig, Trainer

N, FEATURES = 64, 6


class Stop(Exception):
    """The simulated kill."""


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, FEATURES, generator=g)
    y = torch.sin(x @ torch.randn(FEATURES, 1, generator=g)) + 0.1 * torch.randn(N, 1, generator=g)
    return x, y


def run(epochs: int, batch: int, checkpoint: str | None = None, stop_after: int | None = None,
        schedule: str = "cosine") -> dict:
    """Train; return ``{"history", "params", "world_size"}`` (or raise :class:`Stop` after ``stop_after``)."""
    x, y = data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    cfg = TrainConfig(epochs=epochs, lr=lr, schedule=schedule, seed=3, device="cpu", precision="fp32",
                      checkpoint=checkpoint)
    trainer = Trainer(model, opt, cfg, signature={"batch": batch, "n": N})

    def step(idx, ctx):
        pred = model(x[idx])
        err = pred - y[idx]
        return (err ** 2).mean(), len(idx), {"mae": float(err.detach().abs().mean())}

    def stop(epoch, _):
        if epoch == stop_after:
            raise Stop

    history = trainer.fit(step, lambda epoch, gen: shuffled_batches(N, batch, gen), on_epoch=stop)
    return {"history": history, "params": {k: v.clone() for k, v in model.state_dict().items()},
            "world_size": trainer.world_size}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--checkpoint")
    p.add_argument("--stop-after", type=int)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(1)
    try:
        result = run(a.epochs, a.batch, a.checkpoint, a.stop_after, a.schedule)
    except Stop:
        result = None
    import torch.distributed as dist
    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
    else:
        rank = 0
    if result is not None and rank == 0 and a.out:
        torch.save(result, a.out)


if __name__ == "__main__":
    main()
