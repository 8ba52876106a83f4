"""``bayesbridge idealized simulate|calibrate``: the typer sub-app (mounted by ``bayesbridge.cli``).

Both commands check their options, inputs and output path before they start; ``simulate``
writes one netCDF file atomically, ``calibrate`` its three files as one set
(:func:`bayesbridge.io.output_set`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bayesbridge.cli.checks import check_count, check_seed, month_range
from bayesbridge.cli.console import console
from bayesbridge.cli.progress import bars_enabled, status

__all__ = ["app"]

app = typer.Typer(
    help="Simulate and calibrate the multiscale stochastic ENSO model (Chen, Fang & Yu 2022; 2024 parameters).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="netCDF file to write (atomically).")] = Path("idealized.nc"),
    years: Annotated[int, typer.Option(help="Simulated years per member (after burn-in).")] = 100,
    members: Annotated[int, typer.Option(help="Ensemble members.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed (member k uses SeedSequence(seed).spawn()[k]).")] = 0,
    burn_in_years: Annotated[int, typer.Option(help="Spin-up years discarded first.")] = 20,
    dt: Annotated[float, typer.Option(help="Time step in model units (2 months); must divide 0.5.")] = 0.005,
    daily: Annotated[bool, typer.Option(help="Write daily means instead of monthly means.")] = False,
    variant: Annotated[str, typer.Option(help="'default' (sigma_E = 0) or 'sigma_e'.")] = "default",
    f: Annotated[float, typer.Option(help="Overall factor f of the 2024 parameters.")] = 0.65,
    wind_amp: Annotated[float, typer.Option(help="Wind-burst amplitude (0.9).")] = 0.9,
    noise_scale: Annotated[float, typer.Option(help="Multiplier of sigma_u, sigma_h, sigma_C, sigma_E.")] = 1.0,
    m: Annotated[float, typer.Option(help="Mean of the Walker index I, in [0, 4].")] = 2.0,
    start_year: Annotated[int, typer.Option(help="Calendar year of the first month.")] = 1,
) -> None:
    """Simulate an ensemble and write nino3, nino4, h_w, u, tau, walker_i on (member, time)."""
    import time

    from bayesbridge.diagnostics.enso import (
        classify_events,
        event_rates_per_70yr,
        summary_statistics,
    )
    from bayesbridge.idealized.model import MultiscaleENSO
    from bayesbridge.io import check_output_file, write_netcdf

    check_count(years, "--years", minimum=1)
    check_count(members, "--members", minimum=1)
    check_count(burn_in_years, "--burn-in-years", minimum=0)
    check_count(start_year, "--start-year", minimum=1)
    check_seed(seed)
    out = check_output_file(out, "--out")
    model = MultiscaleENSO(f=f, wind_amp=wind_amp, noise_scale=noise_scale, m=m, variant=variant)
    t0 = time.perf_counter()
    with status(f"integrating {members} members x {years} years (numba, dt={dt})"):
        ds = model.simulate(years=years, members=members, seed=seed, burn_in_years=burn_in_years,
                            dt=dt, daily=daily, start_year=start_year)  # fmt: skip
    elapsed = time.perf_counter() - t0
    write_netcdf(ds, out)
    table = Table(title=f"{members} x {years} years in {elapsed:.2f} s (including numba compile or cache load)")
    for col in ("variable", "variance", "std", "skewness", "kurtosis"):
        table.add_column(col)
    stats = summary_statistics(ds, ["nino3", "nino4", "h_w"])
    for name, row in stats.iterrows():
        table.add_row(str(name), *(f"{row[c]:.3f}" for c in ("variance", "std", "skewness", "kurtosis")))
    console.print(table)
    if not daily and years >= 2:
        rates = event_rates_per_70yr(classify_events(ds["nino3"], ds["nino4"]))
        console.print("events per 70 years: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    console.print(f"wrote {out}")


@app.command()
def calibrate(
    out: Annotated[Path, typer.Option(help="Output folder (calibration.nc, summary.csv, predictive.csv).")] = Path(
        "calibration"
    ),
    observations: Annotated[
        Path | None,
        typer.Option(help="netCDF with monthly nino3, nino4 (and h_w) on time; default: bundled ERSST/GODAS."),
    ] = None,
    start: Annotated[str, typer.Option(help="First month of the record (YYYY-01).")] = "1950-01",
    end: Annotated[str, typer.Option(help="Last month of the record (YYYY-12).")] = "2019-12",
    parameters: Annotated[str, typer.Option(help="Comma-separated parameters to calibrate.")] = "f,wind_amp,noise_scale,m",
    design_points: Annotated[int, typer.Option(help="Emulator design points.")] = 40,
    replicates: Annotated[int, typer.Option(help="Records simulated per design point.")] = 64,
    samples: Annotated[int, typer.Option(help="Posterior draws per chain.")] = 2000,
    warmup: Annotated[int, typer.Option(help="Adaptation steps per chain.")] = 2000,
    chains: Annotated[int, typer.Option(help="MCMC chains.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quick: Annotated[bool, typer.Option(help="Small design and short chains (a smoke run).")] = False,
) -> None:
    """Bayesian calibration against observed ENSO statistics (emulated synthetic likelihood).

    Prints the posterior summary (R-hat, ESS) and posterior-predictive statistics beside the
    observed ones; writes the ArviZ container and the tables to OUT.
    """
    from bayesbridge.errors import DataFileError
    from bayesbridge.io import arviz_compat, check_output_dir, output_set

    check_seed(seed)
    start, end = month_range(start, end)
    for value, option in ((design_points, "--design-points"), (replicates, "--replicates"), (samples, "--samples"),
                          (warmup, "--warmup"), (chains, "--chains")):
        check_count(value, option, minimum=1, maximum=100_000)
    out = check_output_dir(out, "--out")
    if observations is None:
        from bayesbridge.datasets import observed_indices

        ds = observed_indices()
    else:
        from bayesbridge.io import open_dataset

        if observations.is_dir():
            raise DataFileError(f"--observations: {str(observations)!r} is a folder; pass a netCDF file.")
        if not observations.exists():
            raise DataFileError(f"--observations: file {str(observations)!r} does not exist.")
        ds = open_dataset(observations)
    if quick:
        design_points, replicates, samples, warmup, chains = 24, 24, 500, 500, 2
    from bayesbridge.idealized.calibrate import CalibrationConfig, calibration_statistics
    from bayesbridge.idealized.calibrate import calibrate as run_calibration

    config = CalibrationConfig(
        parameters=tuple(p.strip() for p in parameters.split(",") if p.strip()),
        design_points=design_points, replicates=replicates, num_samples=samples, num_warmup=warmup,
        num_chains=chains, seed=seed,
    )  # fmt: skip
    ds = _calibration_data(ds, start, end, observations)
    obs = calibration_statistics(ds, start=start, end=end)
    if not bars_enabled():
        console.print(f"calibrating {', '.join(config.parameters)}: {design_points} design points x {replicates} "
                      f"replicates, {chains} chains of {warmup} + {samples} steps", soft_wrap=True)
    result = run_calibration(obs, config, progress=bars_enabled())
    with output_set(out) as stage:
        arviz_compat.to_netcdf(result.idata, stage / "calibration.nc")
        result.summary.to_csv(stage / "summary.csv")
        result.predictive.to_csv(stage / "predictive.csv")
    table = Table(title="posterior")
    for col in ("parameter", "mean", "sd", "5 %", "95 %", "r_hat", "ess_bulk"):
        table.add_column(col)
    iv = result.interval(0.9)
    for name, row in result.summary.iterrows():
        table.add_row(str(name), f"{row['mean']:.3f}", f"{row['sd']:.3f}", f"{iv.loc[name, 'low']:.3f}",
                      f"{iv.loc[name, 'high']:.3f}", f"{row['r_hat']:.3f}", f"{row['ess_bulk']:.0f}")  # fmt: skip
    console.print(table)
    pp = Table(title="posterior predictive vs observed")
    for col in ("statistic", "observed", "pp mean", "pp 5 %", "pp 95 %"):
        pp.add_column(col)
    for name, row in result.predictive.iterrows():
        pp.add_row(str(name), *(f"{row[c]:.3f}" for c in ("observed", "pp_mean", "pp_q05", "pp_q95")))
    console.print(pp)
    console.print(f"wrote {out}/calibration.nc, summary.csv, predictive.csv")


def _calibration_data(ds, start: str, end: str, source):
    """``ds`` with nino3, nino4 on ``time`` covering ``start..end`` (``YYYY-MM``), else a clear error.

    A member dimension of size 1 (``idealized simulate --members 1``) is dropped.
    """
    from bayesbridge.errors import ShapeMismatchError, TimeAxisError, VariableNotFoundError

    if "time" not in ds.dims or ds.sizes["time"] == 0:
        raise TimeAxisError(f"--observations: {source} has no time axis; expected monthly nino3, nino4 on time.")
    missing = [v for v in ("nino3", "nino4") if v not in ds.data_vars]
    if missing:
        raise VariableNotFoundError(f"--observations: {source} lacks {', '.join(missing)} (it has "
                                    f"{', '.join(map(str, ds.data_vars)) or 'no variables'}).")
    for dim in [d for d in ds["nino3"].dims if d != "time"]:
        if ds.sizes[dim] != 1:
            raise ShapeMismatchError(f"--observations: {source} holds {ds.sizes[dim]} series along {dim!r}; "
                                     f"calibrate against one record (select it first, e.g. with ncks or xarray).")
        ds = ds.isel({dim: 0}, drop=True)
    try:
        first, last = (f"{int(t.dt.year):04d}-{int(t.dt.month):02d}" for t in ds["time"][[0, -1]])
    except (AttributeError, TypeError) as exc:
        raise TimeAxisError(f"--observations: the time axis of {source} does not hold dates.") from exc
    if first > start or last < end:
        raise TimeAxisError(
            f"--start, --end: the observations cover {first} to {last}, which does not include {start} to {end}; "
            f"choose a period inside the record with --start and --end."
        )
    return ds
