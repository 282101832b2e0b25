import threading
import time

import pytest

from layercrit.evaluation.devices import DevicePool, gpus_visible


def test_concurrent_jobs_never_share_a_device_and_no_device_idles_while_jobs_wait():
    pool = DevicePool(["cuda:0", "cuda:1", "cuda:2"])
    intervals: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def job():
        with pool.lease() as device:
            start = time.monotonic()
            time.sleep(0.05)
            with lock:
                intervals.append((device, start, time.monotonic()))

    threads = [threading.Thread(target=job) for _ in range(12)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started

    assert len(intervals) == 12
    assert {d for d, _, _ in intervals} == {"cuda:0", "cuda:1", "cuda:2"}
    for device in pool.devices:
        spans = sorted((s, e) for d, s, e in intervals if d == device)
        assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:])), device
    # 12 jobs of 50 ms on 3 devices: 4 rounds if every device stays busy (serial would be 600 ms).
    assert elapsed < 0.45


def test_lease_is_returned_when_the_job_fails():
    pool = DevicePool(["cuda:0"])
    with pytest.raises(RuntimeError):
        with pool.lease():
            raise RuntimeError("job crashed")
    with pool.lease(timeout=1) as device:
        assert device == "cuda:0"


def test_waiting_job_times_out_when_all_devices_are_held():
    pool = DevicePool(["cpu"])
    with pool.lease():
        with pytest.raises(TimeoutError, match="no free device"):
            with pool.lease(timeout=0.05):
                pass


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, 4), ("0,1", 2), ("3", 1), ("", 0), ("-1", 0), ("1,-1,2", 1), ("0,1,2,3,4,5", 4)],
)
def test_gpus_visible_counts_driver_gpus_limited_by_cuda_visible_devices(tmp_path, monkeypatch, visible, expected):
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:41:00.0", "0000:81:00.0"):
        (tmp_path / bus).mkdir()
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpus_visible(tmp_path) == expected
    assert gpus_visible(tmp_path / "no-driver") == 0
