"""The ArviZ layer builds and writes containers without importing ArviZ, laid out as ArviZ would."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from bayesbridge.io import arviz_compat


def _arrays():
    rng = np.random.default_rng(0)
    return dict(
        posterior={"z": rng.normal(size=(1, 5, 7, 3)), "s": rng.normal(size=(1, 5, 2))},
        posterior_predictive={"nino3": rng.normal(size=(1, 5, 7))},
        observed_data={"nino3": rng.normal(size=7)},
        sample_stats={"log_evidence": rng.normal(size=(1, 5))},
        coords={"time": np.arange(7) + 100, "latent": np.arange(3)},
        dims={"z": ["time", "latent"], "nino3": ["time"], "s": ["observable"]},
    )


def test_written_groups_read_back_as_arviz_builds_them(tmp_path):
    import arviz as az

    kw = _arrays()
    reference = az.from_dict(**kw)
    path = arviz_compat.write_groups(arviz_compat.build_groups(**kw, attrs={"method": "enks"}), tmp_path / "a.nc")
    back = arviz_compat.from_netcdf(path)
    assert set(arviz_compat.groups(back)) == set(reference.groups())
    for group in reference.groups():
        ref, got = getattr(reference, group), arviz_compat.group_dataset(back, group)
        assert got.attrs["method"] == "enks"
        for name, var in ref.data_vars.items():
            assert got[name].dims == var.dims, (group, name)
            np.testing.assert_array_equal(got[name].values, var.values)
            for coord in var.coords:
                np.testing.assert_array_equal(got[name][coord].values, var[coord].values)
    assert list(arviz_compat.summary(back, var_names=["s"]).index) == ["s[0]", "s[1]"]
    assert list(arviz_compat.summary(back, var_names=["s"], coords={"observable": [1]}).index) == ["s[1]"]


def test_building_and_writing_import_no_arviz(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from bayesbridge.io import arviz_compat as ac\n"
        "g = ac.build_groups(posterior={'x': np.zeros((1, 3))}, observed_data={'y': np.ones(2)})\n"
        f"ac.write_groups(g, {str(tmp_path / 'b.nc')!r})\n"
        "print('arviz' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert (tmp_path / "b.nc").stat().st_size > 0
