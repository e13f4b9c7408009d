"""The ``lomo-datasets`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lomo_datasets import __version__
from lomo_datasets.core.stage import SettingError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lomo-datasets", description="Turn raw videos into annotated video datasets.")
    parser.add_argument("--version", action="version", version=f"lomo-datasets {__version__}")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument(
        "-v", "--verbose", action="store_true",
        help="log at INFO level, show every library progress bar, per-row warnings and tracebacks",
    )
    noise.add_argument("-q", "--quiet", action="store_true", help="no progress bars (errors and the summary only)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe over videos and write a dataset folder")
    run.add_argument("recipe", help="recipe name (see `lomo-datasets recipes`)")
    run.add_argument("--videos", required=True, help="folder of videos, text file of paths/URLs, or JSONL/CSV manifest")
    run.add_argument("--out", required=True, help="output folder (Hub layout: data/*.parquet + README.md)")
    run.add_argument("--num-proc", type=int, default=1, help="worker processes (one per GPU); with --executor ray: actors per model stage")
    run.add_argument("--config", help="YAML file: step name -> settings")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.SETTING=VALUE")
    run.add_argument("--embedded", action="store_true", help="use the small models that ship in packages (offline)")
    run.add_argument("--work-dir", help="where step outputs persist for reruns (default OUT/.lomo-work)")
    run.add_argument("--chunk-size", type=int, default=256, help="rows per persisted chunk")
    run.add_argument(
        "--group-size", type=int, default=16, metavar="N",
        help="input rows whose rows may share a model batch (default 16); the output depends on it, "
        "never on --num-proc, --shard or --executor",
    )
    run.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="local: worker processes on this machine; ray: Ray Data on a cluster (pip install 'lomo-datasets[ray]')",
    )
    run.add_argument("--ray-address", metavar="ADDRESS", help="with --executor ray: the cluster to join (default: start a local one)")
    run.add_argument("--push-to-hub", metavar="ORG/NAME", help="then push the folder to this Hub dataset repo")
    run.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    run.add_argument(
        "--shard", type=_shard, metavar="I/N",
        help="process part I of N of the input (one per node); join the outputs with `lomo-datasets merge`",
    )

    merge = sub.add_parser("merge", help="join the --out folders of `run --shard 1/N` .. `N/N` into one dataset folder")
    merge.add_argument("parts", nargs="+", help="the shard runs' output folders (any order)")
    merge.add_argument("--out", required=True, help="output folder for the merged dataset (Hub layout)")
    merge.add_argument(
        "--allow-missing", action="store_true",
        help="merge the parts that exist when a shard is missing (the card says which input rows are missing)",
    )

    pub = sub.add_parser("publish", help="push a dataset folder (Hub layout) to a Hub dataset repo")
    pub.add_argument("folder", help="folder written by `run` (data/*.parquet + README.md + stats.png)")
    pub.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub dataset repo (token: HF_TOKEN or `hf auth login`)")
    pub.add_argument("--private", action="store_true", help="create the repo private")
    pub.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help=f"seconds to wait for the Hub to answer one request (default {_hub_default('read')})",
    )
    pub.add_argument(
        "--attempts", type=int, default=None,
        help=f"tries of the whole upload on transient errors (default {_hub_default('attempts')})",
    )

    sub.add_parser("recipes", help="list recipes and their steps")

    aud = sub.add_parser("audit", help="QA quality audit of a LoMo dataset folder: writes OUT/audit.md and OUT/audit.json")
    aud.add_argument("folder", help="folder written by `run lomo` (data/*.parquet)")
    aud.add_argument("--embedded", action="store_true",
                     help="the embedded chat model answers blind and verifies the keys (offline; the model files of run --embedded)")
    aud.add_argument("--llm", dest="llm", action="append", default=[], metavar="SETTING=VALUE",
                     help="LLM setting of the blind answerer and key verifier, e.g. --llm backend=openai --llm base_url=http://127.0.0.1:8000/v1 --llm model=NAME")
    aud.add_argument("--no-blind", action="store_true", help="no LLM: skip the blind answerer and the answer-key verifier")
    aud.add_argument("--no-verify", action="store_true", help="skip the answer-key verifier only")
    from lomo_datasets.audit import checks

    aud.add_argument("--verify-rule", choices=list(checks.VERIFY_RULES), default=checks.VERIFY_RULE,
                     help="which verifier picks flag unverified_key: " + "; ".join(f"{k}: {v}" for k, v in checks.VERIFY_RULES.items())
                     + " (default %(default)s)")

    view = sub.add_parser("view", help="write a review page (OUT/review.html, offline) of a LoMo or LiveCC folder")
    view.add_argument("folder", help="folder written by `run` (data/*.parquet)")
    view.add_argument("--html", help="where to write the page (default FOLDER/review.html)")
    view.add_argument("--per-page", type=int, default=20, help="videos or clips per page")
    view.add_argument("--serve", action="store_true", help="serve the page and its videos on 127.0.0.1 until Ctrl-C")
    view.add_argument("--port", type=int, default=0, help="with --serve: the port (default: a free one)")
    view.add_argument("--video-root", action="append", default=[], metavar="DIR",
                      help="with --serve: also serve the dataset's videos under DIR (default: only those inside FOLDER)")

    sample = sub.add_parser("sample", help="write the sample videos (synthetic frames + espeak-ng speech)")
    sample.add_argument("folder")

    demo = sub.add_parser("demo", help="make the sample videos and run the main recipe on them with embedded models")
    demo.add_argument("--out", default="lomo-demo", help="output folder")
    demo.add_argument("--recipe", default="lomo")
    demo.add_argument("--num-proc", type=int, default=1)
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.SETTING=VALUE",
                      help="override a setting of the demo run (e.g. --set qa.model=embedded:smollm2-135m)")
    return parser


def _shard(text: str) -> tuple[int, int]:
    from lomo_datasets.execution.pipeline import parse_shard

    try:
        return parse_shard(text)
    except SettingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hub_default(what: str):
    from lomo_datasets.publish import hub

    return {"read": hub.HubTimeouts().read, "attempts": hub.DEFAULT_ATTEMPTS}[what]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from lomo_datasets.core import errors
    from lomo_datasets.core import progress
    from lomo_datasets.core.cookies import remove_stale_cookie_files

    progress.configure(verbose=args.verbose, quiet=args.quiet)
    work_dir = _work_dir(args)
    out = getattr(args, "out", None)
    with errors.quiet_workers():
        try:
            remove_stale_cookie_files()
            return _dispatch(args)
        except BrokenPipeError:  # stdout went away (`| head`): nothing left to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except Exception as exc:  # every failure ends as one line (the traceback with -v)
            return _fail(exc, args.verbose, work_dir, out)
        except KeyboardInterrupt as exc:
            return _fail(exc, args.verbose, work_dir, out)


def _fail(exc: BaseException, verbose: bool, work_dir: str | None, out: str | None = None) -> int:
    import traceback

    from lomo_datasets.core import errors
    from lomo_datasets.core.redact import redact

    message, status = errors.explain(exc, work_dir=work_dir, out=out)
    if verbose:
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
    print(f"lomo-datasets: {'' if status == 130 else 'error: '}{message}", file=sys.stderr)
    return status


def _work_dir(args: argparse.Namespace) -> str | None:
    if args.command != "run":
        return None
    if args.work_dir and "://" in str(args.work_dir):  # object storage: a URL, not a path
        from lomo_datasets.core.redact import mask_url_credentials

        return mask_url_credentials(str(args.work_dir))
    return str(Path(args.work_dir or Path(args.out) / ".lomo-work"))


def _dispatch(args: argparse.Namespace) -> int:
    from lomo_datasets.execution import recipes

    if args.command == "recipes":
        for name, recipe in sorted(recipes.RECIPES.items()):
            print(f"{name}: {recipe.description}\n  steps: {' -> '.join(recipe.step_names())}")
        return 0
    if args.command == "audit":
        return _audit(args)
    if args.command == "view":
        return _view(args)
    if args.command == "sample":
        from lomo_datasets.media.samples import make_samples

        paths = make_samples(args.folder)
        for path in paths:
            print(path)
        manifest = Path(args.folder) / "manifest.jsonl"
        print(f"manifest: {manifest} ({len(paths)} videos with titles, categories and the non-English ones' language); "
              f"run on it: lomo-datasets run lomo --videos {manifest} --out OUT --embedded")
        return 0
    if args.command == "publish":
        from lomo_datasets.publish.layout import push_folder

        from lomo_datasets.publish.hub import HubTimeouts
        from lomo_datasets.publish.layout import Retry

        timeouts = HubTimeouts(read=args.timeout) if args.timeout is not None else None
        retry = Retry(attempts=args.attempts) if args.attempts is not None else None
        print(f"pushed: {push_folder(args.folder, args.repo, private=args.private or None, timeouts=timeouts, retry=retry)}")
        return 0
    if args.command == "merge":
        from lomo_datasets.execution.merge import merge_outputs

        out = merge_outputs(args.parts, args.out, allow_missing=args.allow_missing)
        print(f"merged {len(args.parts)} parts into {out}: {_rows_text(out)}, from "
              + ", ".join(f"{part} ({_rows_text(Path(part))})" for part in args.parts))
        print(f"load it with: datasets.load_dataset({str(out)!r})")
        return 0
    if args.command in ("run", "demo"):
        _check_workers(args.num_proc)
    if args.command == "demo":
        from lomo_datasets.publish import outputs
        from lomo_datasets.media.samples import make_samples

        from lomo_datasets.execution.pipeline import parse_overrides

        recipe = recipes.get_recipe(args.recipe)
        overrides = {step: dict(settings) for step, settings in recipe.demo_settings.items()}
        for step, settings in parse_overrides(args.overrides).items():
            overrides.setdefault(step, {}).update(settings)
        out = Path(args.out)
        for line in demo_commands(args.recipe, out, overrides, args.num_proc, recipe.demo_settings):
            print(line, flush=True)
        out = outputs.claim(out)
        with outputs.Lock(out, "--out"):
            make_samples(out / "videos")
        summary = recipes.run_recipe(
            args.recipe, out / "videos" / "manifest.jsonl", out / "dataset", num_proc=args.num_proc, embedded=True,
            overrides=overrides,
        )
        return _print_summary(summary)
    if args.shard and args.shard[1] > 1 and args.push_to_hub:
        raise SettingError("--push-to-hub with --shard: run every shard, `lomo-datasets merge` them, then publish the merged folder")
    summary = recipes.run_recipe(
        args.recipe,
        args.videos,
        args.out,
        num_proc=args.num_proc,
        config=args.config,
        overrides=args.overrides,
        embedded=args.embedded,
        work_dir=args.work_dir,
        chunk_size=args.chunk_size,
        push_to_hub=args.push_to_hub,
        private=args.private or None,
        shard=args.shard,
        executor=args.executor,
        ray_address=args.ray_address,
        group_size=args.group_size,
    )
    return _print_summary(summary)


def _audit(args: argparse.Namespace) -> int:
    from lomo_datasets.audit import checks as audit

    generate, model = None, None
    if not args.no_blind:
        from lomo_datasets.core import safe_yaml

        values = {}
        for item in args.llm:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise SettingError(f"--llm {item!r}: use SETTING=VALUE, e.g. --llm model=Qwen/Qwen2.5-7B-Instruct")
            values[key.strip()] = safe_yaml.load(value, f"--llm {key.strip()}") if value.strip() else None
        settings = audit.blind_settings(values, embedded=args.embedded)
        generate, model = audit.llm_answerer(settings), f"{settings.backend}:{settings.model}"
    from lomo_datasets.publish import outputs

    with outputs.held(args.folder, "folder"):  # not while a run writes it; the marker records the new files
        report = audit.audit_folder(args.folder, generate, blind_model=model, verify=not args.no_verify,
                                    verify_rule=args.verify_rule)
        json_path, md_path = audit.write_report(report, args.folder)
        outputs.record_files(args.folder, [json_path.name, md_path.name])
    print(audit.audit_table(report))
    for name, fig, meaning in (("blind accuracy", report.overall.blind, audit.BLIND_MEANING),
                               ("verified keys", report.overall.verified, audit.VERIFIED_MEANING)):
        line = audit.figure_line(name, fig)
        if line:
            print(f"{line} (95% Wilson interval). {meaning}")
    print(f"flagged items: {len(report.flags_by_item())}; details in {md_path} and {json_path}")
    return 0


def _view(args: argparse.Namespace) -> int:
    from lomo_datasets.review import page as view

    if args.serve:
        server = view.ReviewServer(args.folder, port=args.port, per_page=args.per_page, video_roots=args.video_root)
        print(f"review page: {server.url} (Ctrl-C stops)", flush=True)
        if server.refused:
            print(f"not served: {server.refused} videos outside {args.folder}"
                  f"{' and ' + ', '.join(args.video_root) if args.video_root else ''} (or not regular video files); "
                  "add --video-root DIR for the folder that holds them", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
        return 0
    print(f"review page: {view.write_page(args.folder, args.html, per_page=args.per_page)}")
    return 0


def demo_commands(recipe: str, out: Path, overrides: dict, num_proc: int = 1, demo_settings: dict | None = None) -> list[str]:
    """What ``lomo-datasets demo`` runs, as the two commands that do the same: ``sample`` and
    ``run RECIPE --embedded``, every setting the demo adds (the recipe's ``demo_settings``,
    named on a line of their own, and the user's ``--set``) written as ``--set``."""
    import json
    import shlex

    import yaml

    def value_text(value) -> str:
        plain = str(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        try:
            return plain if yaml.safe_load(plain) == value else json.dumps(value, ensure_ascii=False)
        except yaml.YAMLError:
            return json.dumps(value, ensure_ascii=False)

    run = ["lomo-datasets", "run", recipe, "--videos", str(out / "videos" / "manifest.jsonl"), "--out", str(out / "dataset"), "--embedded"]
    if num_proc != 1:
        run += ["--num-proc", str(num_proc)]
    for step, settings in overrides.items():
        for key, value in settings.items():
            run += ["--set", f"{step}.{key}={value_text(value)}"]
    lines = [
        "demo: the same as these two commands:",
        "  " + shlex.join(["lomo-datasets", "sample", str(out / "videos")]),
        "  " + shlex.join(run),
    ]
    if demo_settings:
        named = ", ".join(f"{step}.{key}={value_text(v)}" for step, settings in demo_settings.items() for key, v in settings.items())
        lines.append(f"demo: recipe {recipe}'s demo settings (for the 10-20 s sample videos): {named}")
    return lines


def _rows_text(folder: Path) -> str:
    """``4 rows`` (``train 3 rows, test 1 rows`` for several splits) of a published folder, read
    from its Parquet footers."""
    import pyarrow.parquet as pq

    from lomo_datasets.execution.pipeline import _split_files

    counts = {split: sum(pq.ParquetFile(str(p)).metadata.num_rows for p in paths) for split, paths in _split_files(Path(folder)).items()}
    if len(counts) == 1:
        return f"{next(iter(counts.values()))} rows"
    return ", ".join(f"{split} {n} rows" for split, n in counts.items()) or "0 rows"


def _check_workers(num_proc: int) -> None:
    """Warn when --num-proc asks for more workers than there are CPU cores (and GPUs): the
    workers then share the cores, and each loads its own models, so the run gets slower."""
    from lomo_datasets.core.stage import cuda_device_count

    if num_proc < 1:
        raise SettingError(f"--num-proc {num_proc}: use 1 or more worker processes")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_proc <= cores:
        return
    gpus = cuda_device_count()
    if num_proc > max(cores, gpus):
        logging.getLogger("lomo_datasets.cli").warning(
            "--num-proc %d is more than the %d CPU cores%s here: each step runs at most that many workers "
            "(and no more than its rows); use --num-proc %d or fewer",
            num_proc, cores, f" and {gpus} GPUs" if gpus else "", max(cores, gpus),
        )


def _print_summary(summary) -> int:
    """Print the run summary; the exit status is 1 when no row survived."""
    for line in summary.lines():
        print(line)
    print(summary.load_hint())
    if summary.empty:
        print(f"lomo-datasets: error: no row survived out of {summary.inputs} inputs; see the causes above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
