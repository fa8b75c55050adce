"""The ``gridshift run-batch`` command line: ``vllm run-batch``'s flags, gridshift's accounting."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from scheduler.config import get_settings

ENGINES = ("vllm", "transformers", "openai")


def register_run_batch(app: typer.Typer) -> None:
    """Mount ``run-batch`` on ``app``."""

    @app.command("run-batch")
    def run_batch_cmd(
        input_file: Annotated[
            Path, typer.Option("-i", "--input-file", help="Batch input (JSONL, OpenAI format).")
        ],
        output_file: Annotated[
            Path, typer.Option("-o", "--output-file", help="Where the results go (JSONL).")
        ],
        model: Annotated[str, typer.Option("--model", help="Model path or hub id.")],
        engine: Annotated[
            str, typer.Option("--engine", help="vllm (default), transformers or openai.")
        ] = "vllm",
        served_model_name: Annotated[
            str | None,
            typer.Option("--served-model-name", help="The name request lines use for the model."),
        ] = None,
        dtype: Annotated[str | None, typer.Option("--dtype")] = None,
        max_model_len: Annotated[int | None, typer.Option("--max-model-len")] = None,
        enforce_eager: Annotated[bool, typer.Option("--enforce-eager")] = False,
        max_num_seqs: Annotated[int | None, typer.Option("--max-num-seqs")] = None,
        tensor_parallel_size: Annotated[
            int | None, typer.Option("--tensor-parallel-size", "-tp")
        ] = None,
        gpu_memory_utilization: Annotated[
            float | None, typer.Option("--gpu-memory-utilization")
        ] = None,
        quantization: Annotated[str | None, typer.Option("--quantization", "-q")] = None,
        seed: Annotated[int | None, typer.Option("--seed")] = None,
        trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code")] = False,
        enable_prefix_caching: Annotated[
            bool | None, typer.Option("--enable-prefix-caching/--no-enable-prefix-caching")
        ] = None,
        base_url: Annotated[
            str | None, typer.Option("--base-url", help="Server root for --engine openai.")
        ] = None,
        power_w: Annotated[
            float,
            typer.Option(
                "--power-w",
                help="Power of this machine's accelerator(s) in W, used only for the energy "
                "ESTIMATE when nothing can be measured (no NVML, no readable RAPL).",
            ),
        ] = 0.0,
        carbon_intensity: Annotated[
            float | None,
            typer.Option(
                "--carbon-intensity",
                help="Grid carbon intensity in g/kWh to book with (source 'given'); default "
                "the SYNTHETIC signal of the local site, labelled as such.",
            ),
        ] = None,
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", help="gridshift data dir (default GRIDSHIFT_DATA_DIR)."),
        ] = None,
    ) -> None:
        """Run a batch file like ``vllm run-batch``, through gridshift's shards and ledger.

        Same flags and the same input and output lines as ``vllm run-batch`` (one output line
        per input line, in input order, error lines included); the file is stored as a batch in
        the embedded store, run shard by shard (lease, engine, energy meter, ledger), and the
        energy (measured or estimated, labelled), the CO2 and the signal that priced it are
        printed.
        """
        from scheduler.errors import EngineError, InvalidInput
        from workers.run_batch import RunBatchArgs, run_batch

        if engine not in ENGINES:
            typer.echo(f"error: --engine must be one of {ENGINES}, got {engine!r}", err=True)
            raise typer.Exit(2)
        if engine == "openai" and not base_url:
            typer.echo("error: --engine openai needs --base-url of the server", err=True)
            raise typer.Exit(2)
        if not input_file.is_file():
            typer.echo(f"error: input file {input_file} does not exist", err=True)
            raise typer.Exit(2)
        settings = get_settings()
        if data_dir is not None:
            settings = settings.model_copy(update={"data_dir": data_dir.resolve()})
        options = {
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager or None,
            "max_num_seqs": max_num_seqs,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "quantization": quantization,
            "seed": seed,
            "trust_remote_code": trust_remote_code or None,
            "enable_prefix_caching": enable_prefix_caching,
            "base_url": base_url,
        }
        args = RunBatchArgs(
            input_file=input_file,
            output_file=output_file,
            model=model,
            engine=engine,
            engine_options=options,
            served_model_name=served_model_name,
            power_w=power_w,
            carbon_g_per_kwh=carbon_intensity,
        )
        try:
            code = run_batch(settings, args, echo=typer.echo)
        except (InvalidInput, EngineError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        # Everything is written and closed (output file, store, vLLM's processes); skip the
        # interpreter's slow teardown of torch and vLLM, as `vllm run-batch` ends promptly too.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
