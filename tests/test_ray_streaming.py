"""The streaming Ray driver: input blocks read by the tasks from the work dir. Four model stages
(four actor pools) on two CPUs finish with the local runner's rows: the blocks' source asks for
no CPU of its own (a read task that asked for a whole one starved the actor pools and the run
hung), and a rerun reuses every part and leaves no input blocks behind."""

from __future__ import annotations

import threading

from datasets import Dataset

from lomo_datasets.execution.pipeline import Runner
from tests.test_ray_executor import _executor, _rows, ray_cluster  # noqa: F401 (the module's Ray instance)
from tests.toy_stages import ToyModelStage


class ToyTwo(ToyModelStage):
    name = "toy_two"


class ToyThree(ToyModelStage):
    name = "toy_three"


class ToyFour(ToyModelStage):
    name = "toy_four"


def test_four_actor_pools_on_two_cpus_finish_with_the_local_rows(ray_cluster, tmp_path):  # noqa: F811
    ds = Dataset.from_dict({"x": [float(i) for i in range(-1, 9)]})
    steps = [ToyModelStage(scale=2.0), ToyTwo(scale=3.0), ToyThree(scale=0.5), ToyFour(scale=1.0)]
    local = Runner(tmp_path / "local", group_size=4).run(ds, steps)
    executor = _executor(tmp_path / "ray", group_size=4)
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(result=executor.run(ds, steps)), daemon=True)
    runner.start()
    runner.join(timeout=480)  # it took under a minute; starved actor pools wait forever
    assert "result" in done, "the Ray run did not finish: are the actor pools starved of CPUs?"
    ray = done["result"]
    assert _rows(ray.dataset) == _rows(local.dataset)
    assert set(ray.model_loads) == {"toy", "toy_two", "toy_three", "toy_four"}
    folder = next((tmp_path / "ray").glob("ray-*"))
    assert not (folder / "input").exists()  # the input blocks go once the run is done
    again = executor.run(ds, steps)  # every part written: nothing runs, the same rows come back
    assert _rows(again.dataset) == _rows(local.dataset)
