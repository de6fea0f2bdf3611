import dask.array as da
import numpy as np
import pytest

from napari_unet.core.predict import predict_tiled

distributed = pytest.importorskip("distributed")


def test_dask_result_runs_on_a_local_cluster(small_valid, rng):
    image = rng.random((80, 60), dtype=np.float32)
    expected = predict_tiled(small_valid, image, tile_size=24)
    lazy = predict_tiled(small_valid, da.from_array(image, chunks=40), tile_size=24)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = client.compute(lazy).result()
    np.testing.assert_allclose(result, expected, atol=1e-6)
