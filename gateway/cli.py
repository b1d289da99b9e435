"""The ``huiliu`` command: ``huiliu serve -c config.yaml``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.faq import KbError
from core.config import Config, ConfigError, load_config
from gateway.logs import configure_logging
from gateway.serving import huiliu_version


def _serve(args: argparse.Namespace) -> int:
    import os
    import socket

    from bot.live import LiveIndex
    from core.config import SqliteStoreConfig
    from gateway.access import exposure_problem
    from gateway.app import build_bot, create_app
    from gateway.container import seed_from_env
    from gateway.event_loop import loop_factory, run_on
    from gateway.serving import BindError, StartupError, listen_socket, listen_url, run, startup_summary
    from gateway.workers.hub import HubLink
    from gateway.workers.seat import WorkerSeat

    seat = WorkerSeat.from_env()  # set when this process is one of a supervisor's workers
    try:
        config = load_config(Path(args.config))
        given = (("host", args.host), ("port", args.port), ("workers", args.workers))
        updates = {k: v for k, v in given if v is not None}
        if updates:
            config = config.model_copy(update={"server": config.server.model_copy(update=updates)})
        if problem := exposure_problem(config.server.host, config.api.tokens):
            raise ConfigError(problem)
        loop_name, new_loop = loop_factory(config.server.event_loop)
        if seeded := seed_from_env(config):
            print(f"huiliu: seeded the knowledge base {seeded} from the image's copy", file=sys.stderr, flush=True)
        if seat is None and config.server.workers > 1:
            return _supervise(args, config)
        bot = build_bot(config)
        if seat is None:
            sock = listen_socket(config.server.host, config.server.port)
        else:
            sock = socket.socket(fileno=seat.listen_fd)
            sock.setblocking(False)
    except (ConfigError, KbError, BindError) as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 2
    entries = len(bot.index.kb.entries) if isinstance(bot.index, LiveIndex) else 0
    summary = startup_summary(config, listen_url(sock), entries, loop_name)
    link = HubLink(seat.hub_fd) if seat is not None else None
    if seat is not None:
        this = f"worker {seat.index + 1} of {seat.workers} (pid {os.getpid()})"
        summary = f"{this}: {summary}" if seat.index == 0 else f"{this} serves"
    # Without Redis's pub/sub, the workers' bus is the supervisor's hub (web chat replies reach any worker).
    bus = link if isinstance(config.store, SqliteStoreConfig) else None
    app = create_app(config, bot, settle_heap=True, bus=bus, seat=seat)
    try:
        run_on(new_loop, run(app, sock, grace_s=config.server.shutdown_grace_s, summary=summary, link=link))
    except StartupError as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 2
    return 0


def _supervise(args: argparse.Namespace, config: Config) -> int:
    """``serve`` with ``server.workers`` > 1: this process binds the port and keeps that many workers on it."""
    import asyncio
    import logging
    import shutil
    import tempfile

    from gateway.serving import BindError, huiliu_version, listen_socket, listen_sockets, listen_url
    from gateway.wiring import opened_store
    from gateway.workers.supervisor import Plan, Supervisor, worker_command, worker_environ

    async def check_store() -> None:
        async with opened_store(config):
            pass

    try:
        # Once, before any worker: SQLite's schema and migrations are made by one process (two racing to add
        # a column would fail one), and an unreachable Redis is one line here, not one per worker.
        asyncio.run(check_store())
    except Exception as exc:
        print(f"huiliu: cannot start: {exc}", file=sys.stderr)
        return 2
    workers, server, ops = config.server.workers, config.server, config.ops
    try:
        listeners = listen_sockets(server.host, server.port, workers)
        metrics = listen_socket(ops.metrics_host, ops.metrics_port) if ops.metrics_port is not None else None
    except BindError as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 2
    url = listen_url(listeners[0])
    # Counters from every worker, summed at each scrape (prometheus_client's multiprocess mode): whichever
    # worker a scrape reaches answers for all, and a restarted worker's counts are kept.
    counts = tempfile.mkdtemp(prefix="huiliu-metrics-")
    environ = {**worker_environ(), "PROMETHEUS_MULTIPROC_DIR": counts}
    plan = Plan(
        command=worker_command(
            sys.executable, ["--log-level", args.log_level, "--log-format", args.log_format], args.config
        ),
        listeners=listeners,
        metrics=metrics,
        grace_s=server.shutdown_grace_s,
        url=url,
        environ=environ,
    )
    logging.getLogger("huiliu.serve").info("huiliu %s: starting %d workers on %s", huiliu_version(), workers, url)
    try:
        return asyncio.run(Supervisor(plan).run())
    finally:
        for sock in (*listeners, *([metrics] if metrics is not None else [])):
            sock.close()
        shutil.rmtree(counts, ignore_errors=True)


def _calls_import(args: argparse.Namespace) -> int:
    import asyncio

    from connectors.phone.cdr import CdrFormat
    from gateway.app import build_bot
    from gateway.calls import import_calls

    try:
        config = load_config(Path(args.config))
        bot = build_bot(config)
        fmt = CdrFormat(args.format) if args.format else None
        from gateway.progress import progress_bar

        with progress_bar("importing calls", quiet=args.quiet) as progress:
            report = asyncio.run(
                import_calls(config, bot, Path(args.file), fmt=fmt, inbox=args.inbox, progress=progress)
            )
    except (ConfigError, KbError, ValueError, OSError) as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 1 if report.bad else 0


def _quarantine(args: argparse.Namespace) -> int:
    """List quarantined input, or replay items through intake (offline, against the configured store)."""
    import asyncio

    from gateway.app import build_bot
    from gateway.quarantine import list_quarantined, replay

    try:
        config = load_config(Path(args.config))
        if args.quarantine_command == "list":
            items = asyncio.run(list_quarantined(config, include_replayed=args.all, limit=args.limit))
            for item in items:
                state = " (replayed)" if item.replayed else ""
                when = item.received_at.isoformat()
                print(f"{item.id}\t{when}\t{item.inbox}\t{len(item.raw)} bytes\t{item.reason}{state}")
            return 0
        from gateway.progress import progress_bar

        bot = build_bot(config)
        with progress_bar("replaying", quiet=args.quiet) as progress:
            results = asyncio.run(replay(config, bot, args.ids, progress=progress))
    except (ConfigError, KbError, OSError) as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.item_id}\t{'ok' if result.ok else 'failed'}\t{result.detail}")
    return 0 if all(r.ok for r in results) else 1


def _faq_eval(args: argparse.Namespace) -> int:
    import json

    from bot.evaluate import (
        Prediction,
        calibrate,
        evaluate,
        evaluate_unknown,
        format_report,
        format_unknown,
        load_bench,
        with_thresholds,
        write_predictions,
    )
    from bot.policy import BotPolicy

    try:
        policy = BotPolicy()
        if args.config:
            from gateway.app import bot_policy

            policy = bot_policy(load_config(Path(args.config)))
        benches = [load_bench(Path(b)) for b in args.bench]
    except (ConfigError, KbError) as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 2
    if args.holdout_entries is not None and not 0 < args.holdout_entries < 1:
        print("huiliu: --holdout-entries must be a fraction between 0 and 1", file=sys.stderr)
        return 2
    if args.folds < 1:
        print("huiliu: --folds must be at least 1", file=sys.stderr)
        return 2
    from gateway.progress import progress_bar

    rows: list[dict[str, object]] = []
    texts: list[str] = []
    for bench in benches:
        with progress_bar(bench.name, quiet=args.quiet) as progress:
            report = evaluate(bench, policy, progress=progress)
        row: dict[str, object] = report.to_json()
        text = format_report(report)
        unknown_preds: list[tuple[Prediction, ...]] = []
        if args.holdout_entries is not None:
            unknown, folds = evaluate_unknown(bench, policy, fraction=args.holdout_entries, folds=args.folds)
            unknown_preds = [preds for _, preds in folds]
            row.update({k: v for k, v in unknown.to_json().items() if k != "name"})
            text += "\n" + format_unknown(unknown)
        rows.append(row)
        texts.append(text)
        if args.predictions:
            target = Path(args.predictions)
            if len(benches) > 1:
                target = target.with_name(f"{target.stem}.{bench.name}{target.suffix or '.jsonl'}")
            write_predictions(target, report.predictions)
        if args.calibrate:
            cal = calibrate(
                bench,
                report.predictions,
                target_wrong=args.target_wrong,
                unknown=unknown_preds,
                target_unknown=args.target_unknown,
            )
            tuned = evaluate(bench, with_thresholds(policy, cal))
            also = ""
            if unknown_preds:
                tuned_unknown, _ = evaluate_unknown(
                    bench, with_thresholds(policy, cal), fraction=args.holdout_entries, folds=args.folds
                )
                also = f" leave-entries-out answered={tuned_unknown.answered} (at most {args.target_unknown:.0%})"
            print(
                f"# {bench.name}: at most {args.target_wrong:.0%} wrong answers; with these thresholds "
                f"answered_correct={tuned.metrics['answered_correct']} "
                f"wrong_answer_rate={tuned.metrics['wrong_answer_rate']}{also}"
            )
            print(cal.as_config())
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    elif not args.calibrate:
        print("\n\n".join(texts))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from gateway.doctor import run

    return run(Path(args.config))


def _token_new(args: argparse.Namespace) -> int:
    """A strong random token, and the config entry that holds only its hash."""
    import hashlib
    import json
    import secrets

    token = secrets.token_urlsafe(32)
    if args.raw:
        print(token)
        return 0
    entry: dict[str, object] = {
        "name": args.name,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "scopes": args.scope or ["admin"],
    }
    if args.inbox:
        entry["inboxes"] = args.inbox
    print(token)
    print("# the api.tokens entry for config.yaml (it keeps only the hash; give the token above to the client):")
    print(f"- {json.dumps(entry, ensure_ascii=False)}")
    return 0


def _worker_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64 (got {value!r})") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"must be from 1 to 64 (got {count})")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="huiliu", description="Huiliu omnichannel intake gateway")
    parser.add_argument("--version", action="version", version=f"huiliu {huiliu_version()}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line, with request_id"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", default="config.yaml", help="path to config.yaml")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--workers", type=_worker_count, metavar="N", help="processes serving the port (overrides server.workers)"
    )
    serve.set_defaults(run=_serve)
    doctor = sub.add_parser("doctor", help="check the config and every service it names")
    doctor.add_argument("-c", "--config", default="config.yaml", help="path to config.yaml")
    doctor.set_defaults(run=_doctor)
    faq = sub.add_parser("faq", help="FAQ bot tools").add_subparsers(dest="faq_command", required=True)
    faq_eval = faq.add_parser("eval", help="measure the FAQ bot on benchmark files")
    faq_eval.add_argument("bench", nargs="+", help="benchmark JSON files (format: shared bench/faq README)")
    faq_eval.add_argument("-c", "--config", help="take the thresholds from this config.yaml (default: shipped)")
    faq_eval.add_argument("--json", action="store_true", help="print a JSON list, one object per file")
    faq_eval.add_argument("--predictions", help="write one JSON line per query, as score.py reads them")
    faq_eval.add_argument("--calibrate", action="store_true", help="choose thresholds for --target-wrong")
    faq_eval.add_argument("--target-wrong", type=float, default=0.05, help="wrong-answer rate to calibrate for")
    faq_eval.add_argument(
        "--holdout-entries",
        type=float,
        metavar="F",
        help="also build the KB without this fraction of its entries and ask their phrasings (leave-entries-out)",
    )
    faq_eval.add_argument("--folds", type=int, default=5, metavar="K", help="leave-entries-out folds (default 5)")
    faq_eval.add_argument(
        "--target-unknown",
        type=float,
        default=0.10,
        help="with --calibrate and --holdout-entries: the share of left-out entries' questions that may be answered",
    )
    faq_eval.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the results")
    faq_eval.set_defaults(run=_faq_eval)
    calls = sub.add_parser("calls", help="phone call records").add_subparsers(dest="calls_command", required=True)
    calls_import = calls.add_parser("import", help="import a CDR file; rows imported before are skipped")
    calls_import.add_argument("file", help="Master.csv, a cdr_csv file or mod_json_cdr records")
    calls_import.add_argument("--format", choices=["asterisk-csv", "freeswitch-csv", "freeswitch-json"])
    calls_import.add_argument("-c", "--config", default="config.yaml", help="path to config.yaml")
    calls_import.add_argument("--inbox", help="the phone inbox (needed when there are several)")
    calls_import.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary")
    calls_import.set_defaults(run=_calls_import)
    quarantine = sub.add_parser("quarantine", help="input that could not be parsed (e.g. broken mail)")
    quarantine_sub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    q_list = quarantine_sub.add_parser("list", help="list quarantined items, oldest first")
    q_list.add_argument("-c", "--config", default="config.yaml", help="path to config.yaml")
    q_list.add_argument("--all", action="store_true", help="include items already replayed")
    q_list.add_argument("--limit", type=int, default=100)
    q_list.set_defaults(run=_quarantine)
    q_replay = quarantine_sub.add_parser("replay", help="parse items again and hand them to intake")
    q_replay.add_argument("ids", nargs="+", metavar="ID", help="ids from 'huiliu quarantine list'")
    q_replay.add_argument("-c", "--config", default="config.yaml", help="path to config.yaml")
    q_replay.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the results")
    q_replay.set_defaults(run=_quarantine)
    from core.scopes import Scope

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    token_new = token.add_parser("new", help="print a strong token and its api.tokens config entry")
    token_new.add_argument("--name", default="helpdesk", help="who the token is (the author of its changes)")
    token_new.add_argument("--scope", action="append", choices=[str(s) for s in Scope], help="repeat for more")
    token_new.add_argument("--inbox", action="append", help="limit it to this inbox (repeat for more)")
    token_new.add_argument("--raw", action="store_true", help="print the token alone (for HUILIU_API_TOKEN)")
    token_new.set_defaults(run=_token_new)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
