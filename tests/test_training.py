"""The one training loop and the device helpers: the step schedule against its formula, exact resume (bit for
bit, also after a simulated kill), refusal of a foreign checkpoint, divergence, the VAE's and the spectral
fit's own loops reproduced exactly, and DistributedDataParallel under torchrun against one process."""

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cryoscape.data.loader import shuffled_batches
from cryoscape.io.errors import InputError
from cryoscape.methods.training import StepContext, Trainer, TrainConfig, learning_rate, load_checkpoint, train
from cryoscape.utils import devices
from cryoscape.utils.hardware import native_bf16

N = 40
X = torch.randn(N, 5, generator=torch.Generator().manual_seed(0))
Y = torch.tanh(X @ torch.randn(5, 2, generator=torch.Generator().manual_seed(1)))


class Stop(Exception):
    pass


def _model():
    torch.manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    return model, torch.optim.Adam(model.parameters(), lr=0.02)


def _step(model, noise=True):
    def step(idx, ctx):
        target = Y[idx]
        if noise:  # drawn from the epoch's generator, as the VAE draws its ε
            target = target + 0.05 * torch.randn(target.shape, generator=ctx.generator)
        with ctx.autocast():
            pred = model(X[idx])
        err = pred.float() - target
        return (err ** 2).mean(), len(idx), {"mae": float(err.detach().abs().mean())}
    return step


def _batches(epoch, gen):
    return shuffled_batches(N, 8, gen, 0, 1)


def _run(epochs, checkpoint=None, stop_after=None, rng="per_epoch", schedule="cosine", signature=None,
         progress=None):
    model, opt = _model()
    cfg = TrainConfig(epochs=epochs, lr=0.02, schedule=schedule, seed=3, rng=rng, device="cpu", precision="fp32",
                      checkpoint=checkpoint)

    def stop(epoch, _):
        if epoch == stop_after:
            raise Stop
    hist = train(model, opt, _step(model), _batches, cfg, signature=signature or {"n": N},
                 extra={"scale": 2.5}, progress=progress, on_epoch=stop)
    return model, hist


def _same_params(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --- schedule -------------------------------------------------------------------------------------------------

def test_learning_rate_follows_the_formula():
    E, lr = 5, 0.3
    for e in range(1, E + 1):
        assert learning_rate(lr, e, E, "cosine") == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / E)))
        assert learning_rate(lr, e, E, "constant") == lr
    assert learning_rate(lr, 1, 4, "cosine") == lr
    assert learning_rate(lr, 3, 4, "cosine") == pytest.approx(lr / 2)  # half way
    assert learning_rate(lr, 4, 4, "cosine") == pytest.approx(lr * (1 - math.sqrt(0.5)) / 2)


def test_history_records_the_scheduled_steps_and_progress_counts_images(tmp_path):
    class Count:
        n = 0

        def advance(self, k):
            self.n += k
    p = Count()
    _, hist = _run(4, progress=p)
    assert [h["lr"] for h in hist] == [learning_rate(0.02, e, 4, "cosine") for e in (1, 2, 3, 4)]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert p.n == 4 * N
    _, hist = _run(3, schedule="constant")
    assert [h["lr"] for h in hist] == [0.02] * 3
    # a resumed run advances the progress by the epochs already done at once
    ck = tmp_path / "c.pt"
    with pytest.raises(Stop):
        _run(4, ck, stop_after=2)
    p = Count()
    _run(4, ck, progress=p)
    assert p.n == 4 * N


# --- checkpoints -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rng", ["per_epoch", "continuous"])
def test_resume_after_a_kill_is_bitwise_the_uninterrupted_run(tmp_path, rng):
    ref, ref_hist = _run(5, rng=rng)
    ck = tmp_path / "ck.pt"
    with pytest.raises(Stop):
        _run(5, ck, stop_after=2, rng=rng)
    assert load_checkpoint(ck, {"n": N})["epoch"] == 2
    with pytest.raises(Stop):  # killed again, later
        _run(5, ck, stop_after=4, rng=rng)
    model, hist = _run(5, ck, rng=rng)
    assert _same_params(model, ref)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5]
    assert [(h["loss"], h["mae"], h["lr"]) for h in hist] == [(h["loss"], h["mae"], h["lr"]) for h in ref_hist]
    model, again = _run(5, ck, rng=rng)  # finished: nothing more to train, same history
    assert _same_params(model, ref) and [h["loss"] for h in again] == [h["loss"] for h in hist]


def test_fewer_epochs_then_more_equals_the_longer_run(tmp_path):
    """Constant steps: 2 epochs, then 3 from the same checkpoint = 3 epochs at once."""
    ref, ref_hist = _run(3, schedule="constant")
    ck = tmp_path / "ck.pt"
    _, first = _run(2, ck, schedule="constant")
    assert len(first) == 2
    model, hist = _run(3, ck, schedule="constant")
    assert _same_params(model, ref)
    assert [h["loss"] for h in hist] == [h["loss"] for h in ref_hist]


def test_checkpoint_holds_the_state_and_extra_entries(tmp_path):
    ck = tmp_path / "ck.pt"
    model, hist = _run(2, ck)
    state = torch.load(ck, weights_only=False)
    assert state["epoch"] == 2 and state["signature"] == {"n": N} and state["scale"] == 2.5
    assert state["history"] == hist and state["items"] == N
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob(".*part*"))  # the atomic write left no temporary file
    m, o = _model()
    trainer = Trainer(m, o, TrainConfig(epochs=3, lr=0.02, seed=3, device="cpu", precision="fp32", checkpoint=ck),
                      signature={"n": N})
    assert trainer.extra == {"scale": 2.5} and trainer.start_epoch == 3 and _same_params(m, model)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    ck = tmp_path / "ck.pt"
    _run(1, ck, signature={"n": N, "zdim": 8})
    with pytest.raises(InputError, match="zdim"):
        _run(2, ck, signature={"n": N, "zdim": 4})
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        _run(2, ck)


def test_non_finite_loss_raises_with_a_hint(tmp_path):
    model, opt = _model()
    step = _step(model)

    def bad(idx, ctx):
        loss, n, m = step(idx, ctx)
        return (loss * math.inf if ctx.epoch == 2 else loss), n, m
    ck = tmp_path / "ck.pt"
    with pytest.raises(FloatingPointError, match="epoch 2.*lower the learning rate"):
        train(model, opt, bad, _batches, TrainConfig(epochs=3, device="cpu", precision="fp32", checkpoint=ck))
    assert load_checkpoint(ck, {})["epoch"] == 1  # the last good epoch stays


def test_bad_options_are_input_errors():
    for kw, option in (({"epochs": 0}, "--epochs"), ({"lr": -1.0}, "--lr"), ({"schedule": "step"}, "--schedule"),
                       ({"precision": "fp8"}, "--precision"), ({"rng": "x"}, "--rng")):
        with pytest.raises(InputError, match=option):
            TrainConfig(**kw).check()


# --- autocast -----------------------------------------------------------------------------------------------

def test_autocast_context_computes_in_the_requested_dtype():
    model, opt = _model()
    seen = []

    def step(idx, ctx):
        with ctx.autocast():
            pred = model(X[idx])
        seen.append((ctx.dtype, pred.dtype))
        return ((pred.float() - Y[idx]) ** 2).mean(), len(idx)
    train(model, opt, step, _batches, TrainConfig(epochs=1, device="cpu", precision="bf16"))
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)}
    seen.clear()
    train(model, opt, step, _batches, TrainConfig(epochs=1, device="cpu", precision="fp32"))
    assert set(seen) == {(None, torch.float32)}


def test_autocast_dtype_by_device():
    assert devices.autocast_dtype("cpu", "fp32") is None
    assert devices.autocast_dtype("cpu", "bf16") == torch.bfloat16
    assert devices.autocast_dtype("cpu", "auto") == (torch.bfloat16 if native_bf16() else None)
    with pytest.raises(InputError, match="--precision"):
        devices.autocast_dtype("cpu", "fp16")


# --- the existing loops, reproduced exactly --------------------------------------------------------------------
# The loops of train_vae (methods/vae/train.py) and fit_model (methods/spectral/model.py) as of commit c2bd803,
# before they moved onto the one loop, transcribed with their data sources replaced by index batches over
# in-memory tensors (what their in-memory paths did). The one loop must reproduce both bit for bit, so that
# moving a method onto it changes no number.

def _old_vae_loop(model, opt, loss_fn, n, batch_size, epochs, lr, seed, schedule):
    history = []
    for epoch in range(1, epochs + 1):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        order = torch.randperm(n, generator=gen).numpy()
        total = mae_sum = 0.0
        model.train()
        for s in range(0, n, batch_size):
            idx = torch.as_tensor(order[s:s + batch_size])
            opt.zero_grad(set_to_none=True)
            loss, mae = loss_fn(idx, gen)
            loss.backward()
            opt.step()
            b = len(idx)
            total += float(loss.detach()) * b
            mae_sum += mae * b
        history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": total / n, "mae": mae_sum / n})
    return history


def _old_spectral_loop(model, opt, loss_fn, n, batch_size, epochs, lr, seed, schedule):
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            loss = loss_fn(idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": epoch, "loss": total / n})
    return history


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_reproduces_the_vae_loop_exactly(schedule):
    """Adam, a per-epoch generator for the order and the noise ε: same parameters and history, bit for bit."""
    def loss_fn(model):
        def f(idx, gen):
            loss, _, m = _step(model)(idx, StepContext(0, gen, torch.device("cpu"), None))
            return loss, m["mae"]
        return f
    old, opt = _model()
    old_hist = _old_vae_loop(old, opt, loss_fn(old), N, 8, 4, 0.02, 3, schedule)
    model, hist = _run(4, schedule=schedule)
    assert _same_params(model, old)
    assert [[h[k] for k in ("epoch", "lr", "loss", "mae")] for h in hist] == [list(h.values()) for h in old_hist]
    assert list(hist[0]) == ["epoch", "lr", "loss", "mae", "wall_s", "images_per_s"]  # the VAE's entries


def test_reproduces_the_spectral_fit_loop_exactly():
    """SGD with momentum, cosine steps, one shuffling generator through all epochs (rng="continuous"):
    same parameters and losses, bit for bit."""
    def loss_fn(model):
        return lambda idx: ((model(X[idx]) - Y[idx]) ** 2).mean()

    def sgd():
        model, _ = _model()
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    old, opt = sgd()
    old_hist = _old_spectral_loop(old, opt, loss_fn(old), N, 16, 4, 0.05, 6, "cosine")
    model, opt = sgd()
    f = loss_fn(model)
    hist = train(model, opt, lambda idx, ctx: (f(idx), len(idx)), lambda e, gen: shuffled_batches(N, 16, gen, 0, 1),
                 TrainConfig(epochs=4, lr=0.05, schedule="cosine", seed=6, rng="continuous", device="cpu",
                             precision="fp32"))
    assert _same_params(model, old)
    assert [h["loss"] for h in hist] == [h["loss"] for h in old_hist]


# --- devices ----------------------------------------------------------------------------------------------------

def test_usable_cores_and_threads():
    n = devices.usable_cores()
    assert 1 <= n <= os.cpu_count()
    assert n <= len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        assert devices.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert devices.set_threads() == max(1, n // devices.dist_info().local_world_size)
        with pytest.raises(InputError, match="--threads"):
            devices.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    assert devices._cgroup_cpu_limit(tmp_path, proc) == 1.5
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert devices._cgroup_cpu_limit(tmp_path, proc) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:cpu,cpuacct:/\n")
    assert devices._cgroup_cpu_limit(v1, proc) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert devices._cgroup_cpu_limit(v1, proc) is None


def test_resolve_device():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="--device"):
        devices.resolve_device("tpu")
    if torch.cuda.is_available():
        assert devices.resolve_device("auto").type == "cuda"
        assert devices.resolve_device("cuda").type == "cuda"
    else:
        assert devices.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(InputError, match="CUDA requested but torch sees no GPU"):
            devices.resolve_device("cuda")
        with pytest.raises(InputError, match="--device"):
            devices.resolve_device("cuda:0")


def test_to_device_moves_nested_batches():
    @dataclass
    class Batch:
        x: torch.Tensor
        parts: tuple
    b = Batch(torch.ones(2), (torch.zeros(1), {"k": torch.ones(3)}, "name"))
    moved = devices.to_device(b, torch.device("cpu"))
    assert isinstance(moved, Batch) and moved.parts[2] == "name" and torch.equal(moved.parts[1]["k"], torch.ones(3))


def test_one_process_distributed_helpers_do_nothing():
    assert devices.dist_info().world_size >= 1
    assert devices.is_main()
    t = torch.tensor([1.0, 2.0])
    assert devices.all_reduce_sum(t) is t and devices.all_reduce_mean(t).tolist() == [1.0, 2.0]
    devices.barrier()


# --- torchrun ---------------------------------------------------------------------------------------------------

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


def _torchrun(tmp_path, out, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(SCRIPT),
           "--out", str(out), *map(str, args)]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return torch.load(out, weights_only=False) if out.exists() else None


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_torchrun_matches_one_process_and_resumes(tmp_path):
    """2 ranks × 4 images = a global batch of 8: the loss history after 3 epochs equals a one-process run
    with batch 8 (within 1 %; measured ~1e-7); killed after epoch 2 and relaunched, it resumes to the same
    parameters as the uninterrupted torchrun; 2 epochs then 3 (constant steps) likewise. A global batch of 7
    leaves rank 1 an empty part of the last batch, which still matches."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("ddp_train_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    ddp = _torchrun(tmp_path, tmp_path / "ddp.pt", "--epochs", 3, "--batch", 8)
    one = script.run(3, 8)
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    for a, b in zip(ddp["history"], one["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.01) and a["mae"] == pytest.approx(b["mae"], rel=0.01)
    assert len(ddp["history"]) == 3

    ck = tmp_path / "ck.pt"
    assert _torchrun(tmp_path, tmp_path / "killed.pt", "--epochs", 3, "--checkpoint", ck, "--stop-after", 2) is None
    assert torch.load(ck, weights_only=False)["epoch"] == 2
    resumed = _torchrun(tmp_path, tmp_path / "resumed.pt", "--epochs", 3, "--checkpoint", ck)
    assert all(torch.equal(resumed["params"][k], v) for k, v in ddp["params"].items())
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in ddp["history"]]

    ck2 = tmp_path / "ck2.pt"
    straight = _torchrun(tmp_path, tmp_path / "c3.pt", "--epochs", 3, "--schedule", "constant")
    _torchrun(tmp_path, tmp_path / "c2.pt", "--epochs", 2, "--schedule", "constant", "--checkpoint", ck2)
    more = _torchrun(tmp_path, tmp_path / "c23.pt", "--epochs", 3, "--schedule", "constant", "--checkpoint", ck2)
    assert all(torch.equal(more["params"][k], v) for k, v in straight["params"].items())

    uneven = _torchrun(tmp_path, tmp_path / "b7.pt", "--epochs", 2, "--batch", 7)
    for a, b in zip(uneven["history"], script.run(2, 7)["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.01)
