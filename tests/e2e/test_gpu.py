"""GPU checks (skipped without CUDA): the same loop on the device, packs, a sweep, determinism,
the same counter-based random numbers as on the CPU."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

try:  # installed (make install); scripts/device_check.sh runs from a bare source tree instead
    from l2reg.cli.main import app
except ModuleNotFoundError:
    from cli.main import app
from l2reg.config import ScheduleConfig
from l2reg.data import load_mnist
from l2reg.train import TrainSettings, make_spec, train_pack

pytestmark = pytest.mark.gpu


def test_data_lives_on_the_device_and_a_pack_trains_there(tiny_mnist):
    data = load_mnist(tiny_mnist, device="cuda")
    assert data.train_x.is_cuda and data.test_y.is_cuda
    specs = [make_spec(seed, 1e-3, ScheduleConfig(), target="both") for seed in range(3)]
    results = train_pack(specs, data, TrainSettings(epochs=2, batch_size=64), "cuda")
    assert all(r["status"] == "ok" and r["device"].startswith("cuda") for r in results)
    total_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 < results[0]["peak_memory_mib"] < total_mib
    assert len({r["metrics"]["weight_sq_norm"] for r in results}) == 3
    assert all(0 <= r["metrics"]["probe_acc_1000"] <= 100 for r in results)


def test_gpu_pack_matches_cpu_runs_without_dropout(tiny_mnist):
    specs = [make_spec(0, 1e-3, ScheduleConfig(), target="weights"),
             make_spec(1, 1e-2, ScheduleConfig("exponential"), target="activations", norm="l1"),
             make_spec(2, 1.0, ScheduleConfig(), target="weights", form="decoupled", scope="all")]
    settings = TrainSettings(epochs=1, batch_size=64, dropout=0.0, deterministic=True)
    cpu_data, gpu_data = load_mnist(tiny_mnist), load_mnist(tiny_mnist, device="cuda")
    for name in vars(cpu_data):
        if getattr(cpu_data, name).is_floating_point():
            setattr(cpu_data, name, getattr(cpu_data, name).double())
            setattr(gpu_data, name, getattr(gpu_data, name).double())
    on_gpu = train_pack(specs, gpu_data, settings, "cuda", keep_params=True)
    for spec, gpu_result in zip(specs, on_gpu):
        [cpu_result] = train_pack([spec], cpu_data, settings, "cpu", keep_params=True)
        for name, value in cpu_result["params"].items():
            assert torch.allclose(value, gpu_result["params"][name], rtol=1e-6, atol=1e-8), name


def test_a_sweep_on_the_gpu(tiny_mnist, tmp_path):
    result = CliRunner().invoke(app, ["run", "alpha=0.0,1e-3", "seeds=4", f"data.root={tiny_mnist}",
                                      f"results_dir={tmp_path}", "name=g", "train.device=cuda", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(tmp_path / "g" / "runs.csv")
    assert len(runs) == 8 and set(runs["device"]) == {"cuda"} and (runs["pack_size"] > 1).all()


def test_counter_based_masks_and_orders_are_the_same_on_cpu_and_gpu():
    from l2reg import rng

    seeds = list(range(70))
    cpu_keys, gpu_keys = rng.keys_tensor(seeds, 2, "cpu"), rng.keys_tensor(seeds, 2, "cuda")
    cpu_masks = rng.dropout_masks(cpu_keys, 123, (128, 64), 0.5, torch.float32)
    assert torch.equal(cpu_masks, rng.dropout_masks(gpu_keys, 123, (128, 64), 0.5, torch.float32).cpu())
    assert torch.equal(rng.permutations(cpu_keys, 3, 54_000), rng.permutations(gpu_keys, 3, 54_000).cpu())
