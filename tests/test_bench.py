import json

from fmnist.cli import main


def test_bench_runs_on_a_tiny_setting(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "lenet5", "--limit", "256", "--test-limit", "64", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["models"]["lenet5"]
    assert r["parameters"] == 44426
    assert r["fmnist_train_images_per_s"] > 0 and r["reference_train_images_per_s"] > 0 and r["train_speedup"] > 0
    assert r["fmnist_batch1_latency_ms"] > 0
