"""``bayesbridge assimilate``: reanalysis of observed index series (:mod:`bayesbridge.apps.reanalysis`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bayesbridge.cli.console import console

__all__ = ["assimilate_command"]


def assimilate_command(
    observations: Annotated[Path, typer.Option(help="Index file: CSV with a 'time' column (YYYY-MM) or netCDF.")],
    vars: Annotated[str, typer.Option("--vars", help="Indices to assimilate, comma-separated (nino3,nino4[,h_w,nino34,nino12]).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    operational: Annotated[
        list[Path] | None, typer.Option(help="Operational model files (CMIP6 netCDF; repeat or use a glob). Default: the bundled synthetic model.")
    ] = None,
    method: Annotated[str, typer.Option(help="enkf, etkf, enks, pf, svi or kalman.")] = "enks",
    members: Annotated[int, typer.Option(help="Ensemble members / particles / draws.")] = 100,
    latent_dim: Annotated[int, typer.Option(help="Latent size of the EOF codec.")] = 20,
    start: Annotated[str | None, typer.Option(help="First month (YYYY-MM).")] = None,
    end: Annotated[str | None, typer.Option(help="Last month (YYYY-MM).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the assimilation.")] = 0,
) -> None:
    """Reconstruct fields with uncertainty from observed index series (reanalysis mode).

    Writes OUT/posterior.nc (field summaries <var>_{mean,std,q05,q50,q95} and box series
    <box>_{mean,q05,q95}), OUT/inference_data.nc and OUT/validation.csv (skill against every
    known index in the file, assimilated or withheld).
    """
    from bayesbridge.apps.reanalysis import read_observations, reconstruct
    from bayesbridge.bridge import BridgeConfig
    from bayesbridge.devices import single_torch_thread
    from bayesbridge.io import arviz_compat, atomic_path, open_operational

    names = [v.strip() for v in vars.split(",") if v.strip()]
    with console.status("reading observations and operational fields"):
        obs = read_observations(observations, start=start, end=end)
        fields = None
        if operational:
            sources = [str(p) for p in operational]
            fields = open_operational(sources[0] if len(sources) == 1 else sources, region=None).load()
    config = BridgeConfig(method=method, members=members, latent_dim=latent_dim)
    with console.status(f"fitting the latent space and assimilating {', '.join(names)} ({method})"), \
            single_torch_thread():
        rec = reconstruct(obs, names, operational=fields, config=config, seed=seed)
        post = rec.bridge_result.posterior
        post.summary()
    out.mkdir(parents=True, exist_ok=True)
    post.to_netcdf(out / "posterior.nc")
    arviz_compat.to_netcdf(post.to_inference_data(), out / "inference_data.nc")
    with atomic_path(out / "validation.csv") as tmp:
        rec.validation.to_csv(tmp)
    table = Table(title="Posterior against the observations")
    for col in ("index", "assimilated", "months", "correlation", "90 % coverage"):
        table.add_column(col)
    for name, row in rec.validation.iterrows():
        table.add_row(name, str(bool(row["assimilated"])), str(int(row["months"])),
                      f"{row['correlation']:.3f}", f"{row['coverage90']:.2f}")
    console.print(table)
    console.print(f"wrote {out}/posterior.nc, inference_data.nc, validation.csv")
