"""The ``gridshift run-batch`` command line: ``vllm run-batch``'s flags, gridshift's accounting."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
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
            str,
            typer.Option(
                "-i",
                "--input-file",
                help="Batch input (JSONL, OpenAI format): a path or an http(s) URL (GET).",
            ),
        ],
        output_file: Annotated[
            str,
            typer.Option(
                "-o",
                "--output-file",
                help="Where the results go (JSONL): a path or an http(s) URL (uploaded with PUT).",
            ),
        ],
        model: Annotated[str, typer.Option("--model", help="Model path or hub id.")],
        engine: Annotated[
            str, typer.Option("--engine", help="vllm (default), transformers or openai.")
        ] = "vllm",
        served_model_name: Annotated[
            list[str] | None,
            typer.Option(
                "--served-model-name",
                help="Names request lines may use for the model (several: "
                "--served-model-name a b); the first is the name in the output.",
            ),
        ] = None,
        more_names: Annotated[
            list[str] | None, typer.Argument(hidden=True, show_default=False)
        ] = None,
        output_tmp_dir: Annotated[
            Path | None,
            typer.Option(
                "--output-tmp-dir",
                help="Directory for the output before it is uploaded to an http(s) -o "
                "(and for a downloaded -i); default the system's temporary directory.",
            ),
        ] = None,
        enable_metrics: Annotated[
            bool,
            typer.Option(
                "--enable-metrics", help="Serve Prometheus metrics on --port during the run."
            ),
        ] = False,
        port: Annotated[
            int, typer.Option("--port", help="Port of the metrics server (--enable-metrics).")
        ] = 8000,
        host: Annotated[
            str | None,
            typer.Option("--host", help="Address of the metrics server (default all)."),
        ] = None,
        chat_template: Annotated[
            str | None,
            typer.Option("--chat-template", help="Chat template: a file or the template itself."),
        ] = None,
        tokenizer: Annotated[
            str | None, typer.Option("--tokenizer", help="Tokenizer path or hub id (vllm).")
        ] = None,
        revision: Annotated[
            str | None, typer.Option("--revision", help="Model revision on the hub (vllm).")
        ] = None,
        tool_call_parser: Annotated[
            str | None,
            typer.Option(
                "--tool-call-parser", help="vLLM tool parser for tool calls, e.g. hermes."
            ),
        ] = None,
        enable_auto_tool_choice: Annotated[
            bool,
            typer.Option(
                "--enable-auto-tool-choice",
                help="Let the model decide to call tools (tool_choice auto; needs "
                "--tool-call-parser).",
            ),
        ] = False,
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
        from scheduler.errors import ConfigError, EngineError, InvalidInput
        from workers.run_batch import RunBatchArgs, run_batch
        from workers.run_batch_io import UploadFailed, is_url

        names = [*(served_model_name or []), *(more_names or [])]
        problem = _problem(engine, base_url, input_file)
        if more_names and not served_model_name:
            problem = f"unexpected argument(s) {more_names}"
        if problem:
            typer.echo(f"error: {problem}", err=True)
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
            "chat_template": chat_template,
            "tokenizer": tokenizer,
            "revision": revision,
            "tool_call_parser": tool_call_parser,
            "enable_auto_tool_choice": enable_auto_tool_choice or None,
        }
        _note_unused(engine, options)
        args = RunBatchArgs(
            input_file=input_file if is_url(input_file) else Path(input_file),
            output_file=output_file if is_url(output_file) else Path(output_file),
            model=model,
            engine=engine,
            engine_options=options,
            served_model_names=tuple(names),
            power_w=power_w,
            carbon_g_per_kwh=carbon_intensity,
            output_tmp_dir=output_tmp_dir,
            metrics_port=port if enable_metrics else None,
            metrics_host=host,
        )
        try:
            code = run_batch(settings, args, echo=typer.echo)
        except (InvalidInput, EngineError, ConfigError) as e:
            typer.echo(f"error: {e}", err=True)
            code = 2
        except UploadFailed as e:
            typer.echo(f"error: {e}", err=True)
            code = 1
        # Everything is written and closed (output file, store, vLLM's processes) on every
        # path; skip the interpreter's slow teardown of torch and vLLM, as `vllm run-batch`
        # ends promptly too.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)


def _problem(engine: str, base_url: str | None, input_file: str) -> str | None:
    """What is wrong with the command line before anything starts (None: nothing)."""
    from workers.run_batch_io import is_url

    if engine not in ENGINES:
        return f"--engine must be one of {ENGINES}, got {engine!r}"
    if engine == "openai" and not base_url:
        return "--engine openai needs --base-url of the server"
    if not is_url(input_file) and not Path(input_file).is_file():
        return f"input file {input_file} does not exist (give a path or an http(s) URL)"
    return None


# Options that change nothing on an engine: the openai engine's server holds the model, its
# tokenizer and template; the transformers engine takes the model directory as it is.
_VLLM_ONLY = (
    "chat_template",
    "tokenizer",
    "revision",
    "tool_call_parser",
    "enable_auto_tool_choice",
)


def _note_unused(engine: str, options: Mapping[str, object]) -> None:
    if engine == "vllm":
        return
    unused = [k for k in _VLLM_ONLY if options.get(k) is not None]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        typer.echo(f"note: {flags} not used by the {engine} engine (its server or model decides)")
