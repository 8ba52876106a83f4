"""``bayesbridge assimilate``: reanalysis of observed index series (:mod:`bayesbridge.apps.reanalysis`).

Everything the run needs is checked first, in seconds: the options, the output folder, every
cell of the observation file, the operational files (variables, box coverage, calendar, latent
size) and the memory the request needs. Only then are the operational fields loaded and the
assimilation run; the three outputs are written as one set (:func:`bayesbridge.io.output_set`)
and carry the same ``run_id``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bayesbridge.cli.bridge_options import (
    CODEC_HELP,
    DYNAMICS_HELP,
    MEMBERS_HELP,
    PARTICLES_HELP,
    PROPOSAL_HELP,
    check_engine_memory,
)
from bayesbridge.cli.checks import (
    check_bridge_options,
    check_count,
    check_option_choice,
    check_seed,
    month_range,
    parse_names,
)
from bayesbridge.cli.console import console
from bayesbridge.cli.progress import status

__all__ = ["assimilate_command"]

DEFAULT_TWIN = {"years": 200, "seed": 0}  # the twin experiment of apps.reanalysis.default_operational


def assimilate_command(
    observations: Annotated[Path, typer.Option(help="Index file: CSV with a 'time' column (YYYY-MM) or netCDF.")],
    vars: Annotated[str, typer.Option("--vars", help="Indices to assimilate, comma-separated (nino3,nino4[,h_w,nino34,nino12,eq_sst]); eq_sst: "
                                                      "the equatorial SST profile, derived from nino3/nino4 by the regression.")],
    out: Annotated[Path, typer.Option(help="Output folder (created if missing; other files in it are kept).")],
    operational: Annotated[
        list[Path] | None, typer.Option(help="Operational model files (CMIP6 netCDF; repeat or use a glob). Default: the bundled synthetic model.")
    ] = None,
    method: Annotated[str, typer.Option(help="enkf, etkf, enks, pf, svi or kalman.")] = "enks",
    members: Annotated[int | None, typer.Option(help=MEMBERS_HELP + " [default: 100; 2 x 6 x latent for "
                                                "--dynamics lstm with an ensemble Kalman method]")] = None,
    latent_dim: Annotated[int, typer.Option(help="Latent size of the codec.")] = 20,
    codec: Annotated[str, typer.Option(help=CODEC_HELP)] = "eof",
    dynamics: Annotated[str, typer.Option(help=DYNAMICS_HELP)] = "seasonal",
    particles: Annotated[int | None, typer.Option(help=PARTICLES_HELP)] = None,
    proposal: Annotated[str | None, typer.Option(help=PROPOSAL_HELP)] = None,
    start: Annotated[str | None, typer.Option(help="First month (YYYY-MM).")] = None,
    end: Annotated[str | None, typer.Option(help="Last month (YYYY-MM).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the assimilation (0 to 4294967295).")] = 0,
    member: Annotated[int | None, typer.Option(help="Member to read from a netCDF file holding an ensemble (member dimension).")] = None,
    error_scales: Annotated[str, typer.Option(
        help="integrate: average over the observation- and model-error scales' posterior (priors floored at "
             "the representation error; enks/kalman, svi infers them; others use fixed); fixed: hold them at "
             "the representation error.")] = "fixed",
) -> None:
    """Reconstruct fields with uncertainty from observed index series (reanalysis mode).

    Writes OUT/posterior.nc (field summaries <var>_{mean,std,q05,q50,q95} and box series
    <box>_{mean,q05,q95}), OUT/inference_data.nc and OUT/validation.csv (skill against every
    known index in the file, assimilated or withheld), all three together and stamped with the
    same run_id.
    """
    from bayesbridge.regions import STANDARD_BOXES

    names = parse_names(vars, "--vars", (*STANDARD_BOXES, "eq_sst"))
    check_bridge_options(method, codec, dynamics, members, particles, proposal)
    check_count(latent_dim, "--latent-dim", minimum=1)
    if members is None:
        from bayesbridge.apps.bridge_options import default_members

        members = default_members(method, dynamics, latent_dim)
    check_option_choice(error_scales, "--error-scales", ("integrate", "fixed"))
    check_seed(seed)
    start, end = month_range(start, end)
    if member is not None:
        check_count(member, "--member", minimum=0)
    from bayesbridge.io import check_output_dir

    out = check_output_dir(out, "--out")
    from bayesbridge.apps.bridge_options import bridge_config
    from bayesbridge.apps.reanalysis import (
        check_operational,
        default_operational,
        read_observations,
        reconstruct,
        reconstruction_memory,
    )
    from bayesbridge.bridge import observations_from
    from bayesbridge.bridge.export import posterior_groups
    from bayesbridge.devices import single_torch_thread
    from bayesbridge.io import arviz_compat, open_operational, output_set, write_netcdf

    with status("checking the observations and the operational model"):
        obs = read_observations(observations, start=start, end=end, member=member)
        selected = observations_from(obs, [n for n in names if n != "eq_sst"])
        if operational:
            sources = [str(p) for p in operational]
            fields = open_operational(sources[0] if len(sources) == 1 else sources, region=None)
        else:
            from bayesbridge.datasets import make_twin_experiment

            fields = make_twin_experiment(**DEFAULT_TWIN).operational
        check_operational(fields, names, latent_dim=latent_dim, seasonal=dynamics == "seasonal", observations=selected)
        months = int(selected.sizes["time"])
        check_engine_memory(lambda n, d: reconstruction_memory(months, n, d, fields), method=method,
                            members=members, latent_dim=latent_dim, dynamics=dynamics, particles=particles,
                            what=f"over {months} months", fix_period="shorten the period with --start/--end")
    config = bridge_config(method=method, members=members, particles=particles, proposal=proposal,
                           latent_dim=latent_dim, codec=codec, dynamics=dynamics, error_scales=error_scales)
    with status("reading the operational fields"):
        fields = fields.load() if operational else default_operational(**DEFAULT_TWIN)
    with status(f"fitting the latent space and assimilating {', '.join(names)} ({method})"), single_torch_thread():
        rec = reconstruct(obs, names, operational=fields, config=config, seed=seed)
        post = rec.bridge_result.posterior
        summary = post.summary()
    run_id = uuid.uuid4().hex[:12]
    with status(f"writing {out}"), output_set(out) as stage:
        write_netcdf(summary, stage / "posterior.nc", attrs={"run_id": run_id})
        groups = posterior_groups(post)  # written with xarray: no ArviZ import
        groups["posterior"].attrs["run_id"] = run_id
        arviz_compat.write_groups(groups, stage / "inference_data.nc")
        rec.validation.assign(run_id=run_id).to_csv(stage / "validation.csv")
    table = Table(title="Posterior against the observations")
    for col in ("index", "assimilated", "months", "correlation", "90 % coverage"):
        table.add_column(col)
    for name, row in rec.validation.iterrows():
        table.add_row(name, str(bool(row["assimilated"])), str(int(row["months"])),
                      f"{row['correlation']:.3f}", f"{row['coverage90']:.2f}")
    console.print(table)
    console.print(f"wrote {out}/posterior.nc, inference_data.nc, validation.csv (run_id {run_id})")

